//! The Job controller end to end, over the in-process registry on the memory store, with the
//! fake scheduler and kubelet of `capstan_controller::testing`. The fake kubelet only makes
//! Pods run; the tests decide how they end, writing `Succeeded` or `Failed` through the status
//! subresource as a kubelet would.
//!
//! Every case runs on tokio's paused clock (the controller reads a clock that follows it)
//! and asserts on the recorded Events and on the Pod history at every revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use capstan_api::k8s_openapi::api::core::v1::{Container, Event, Pod, PodSpec, PodTemplateSpec};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions, ObjectHistory};
use capstan_controllers::job::{JobController, COMPONENT, JOB_TRACKING_FINALIZER};
use capstan_watch::{InformerFactory, ObjectKey, ReflectorOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "default";

/// Wall-clock time that moves with tokio's (paused) clock.
fn paused_clock() -> impl Fn() -> Timestamp + Send + Sync + 'static {
    let base = Timestamp::now().as_millisecond();
    let start = Instant::now();
    move || Timestamp::from_millisecond(base + start.elapsed().as_millis() as i64).unwrap()
}

fn job(
    name: &str,
    completions: i32,
    parallelism: i32,
    backoff_limit: Option<i32>,
    deadline: Option<i64>,
) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            completions: Some(completions),
            parallelism: Some(parallelism),
            backoff_limit,
            active_deadline_seconds: deadline,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "work".into(),
                        image: Some("busybox".into()),
                        ..Container::default()
                    }],
                    restart_policy: Some("Never".into()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

async fn create_job(client: &Arc<dyn Client>, job: Job) -> Job {
    Api::<Job>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &job)
        .await
        .unwrap()
}

fn pods(client: &Arc<dyn Client>) -> Api<Pod> {
    Api::namespaced(client.clone(), NS)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn owned_by<'a>(
    state: &'a BTreeMap<ObjectKey, Arc<Pod>>,
    job: &'a Job,
) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
    let uid = job.metadata.uid.clone().unwrap();
    state.values().filter(move |p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}

/// The Job's Pods the kubelet reports running and nobody is deleting.
fn running<'a>(state: &'a BTreeMap<ObjectKey, Arc<Pod>>, job: &'a Job) -> Vec<Arc<Pod>> {
    let mut running: Vec<Arc<Pod>> = owned_by(state, job)
        .filter(|p| phase(p) == "Running" && p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    running.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    running
}

/// Ends `pod` with `phase`, as its kubelet would report it.
async fn finish(client: &Arc<dyn Client>, pod: &Pod, phase: &str) {
    let name = pod.metadata.name.clone().unwrap();
    for _ in 0..5 {
        let mut current = pods(client).get(&name).await.unwrap();
        let status = current.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.into());
        for condition in status.conditions.iter_mut().flatten() {
            if condition.type_ == "Ready" || condition.type_ == "ContainersReady" {
                condition.status = "False".into();
            }
        }
        match pods(client)
            .update_status(&PostParams::default(), &current)
            .await
        {
            Ok(_) => return,
            Err(error) if error.is_conflict() => continue,
            Err(error) => panic!("finishing {name}: {error}"),
        }
    }
    panic!("finishing {name}: too many conflicts");
}

/// Makes every running Pod of the namespace succeed `after` it started running.
fn succeed_running_pods(client: Arc<dyn Client>, after: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(after).await;
            let list = pods(&client).list(&ListParams::default()).await.unwrap();
            for pod in list.items {
                if phase(&pod) == "Running" && pod.metadata.deletion_timestamp.is_none() {
                    finish(&client, &pod, "Succeeded").await;
                }
            }
        }
    })
}

async fn job_status(client: &Arc<dyn Client>, name: &str) -> JobStatus {
    Api::<Job>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// Waits until the Job has a `True` condition of `type_`.
async fn wait_for_condition(history: &ObjectHistory<Job>, name: &str, type_: &str) {
    history
        .wait_until(|state| {
            state
                .get(&ObjectKey::namespaced(NS, name))
                .and_then(|job| job.status.as_ref()?.conditions.clone())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == type_ && c.status == "True")
                })
        })
        .await;
}

/// A running Job controller, with a fake scheduler and kubelet, and its Events.
struct Running {
    events: EventBroadcaster,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(client: Arc<dyn Client>) -> Self {
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(10_000),
        );
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let controller: JobController =
            capstan_controllers::job::controller(client, factory, events.recorder(COMPONENT))
                .map_reconciler(|reconciler| reconciler.with_clock(paused_clock()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            controller
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Running {
            events,
            stop: Some(stop),
            task,
        }
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        self.events.flush().await;
        self.events
            .history()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.events.flush().await;
    }
}

fn nodes() -> Vec<String> {
    vec!["n1".into(), "n2".into()]
}

fn cluster(client: &Arc<dyn Client>) -> (FakeScheduler, FakeKubelet) {
    (
        FakeScheduler::start(client.clone(), nodes()),
        FakeKubelet::start(client.clone(), nodes(), KubeletOptions::default()),
    )
}

#[tokio::test(start_paused = true)]
async fn five_completions_two_at_a_time_never_run_more_than_two_pods_and_complete() {
    within(Duration::from_secs(300), async {
        let client = capstan_apiserver::testing::client();
        let _cluster = cluster(&client);
        let history = ObjectHistory::<Pod>::record(client.clone());
        let jobs = ObjectHistory::<Job>::record(client.clone());
        let controller = Running::start(client.clone());
        let finisher = succeed_running_pods(client.clone(), Duration::from_secs(2));
        let job = create_job(&client, job("pi", 5, 2, None, None)).await;

        wait_for_condition(&jobs, "pi", "Complete").await;
        finisher.abort();
        // Let the last finalizers go and give a wrong extra Pod every chance to appear.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let created = controller.events("SuccessfulCreate").await;
        let completed = controller.events("Completed").await;
        controller.stop().await;

        for (revision, state) in history.states() {
            let active = owned_by(&state, &job).filter(|p| p.is_active()).count();
            assert!(active <= 2, "{active} active pods at revision {revision}");
        }
        let status = job_status(&client, "pi").await;
        assert_eq!(status.succeeded, Some(5));
        assert_eq!(status.failed, Some(0));
        assert_eq!(status.active, Some(0));
        assert_eq!(status.uncounted_terminated_pods, None);
        let start = status.start_time.unwrap().0;
        let end = status.completion_time.unwrap().0;
        assert!(end > start);
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "Complete");

        assert_eq!(created.len(), 5);
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].message.as_deref(), Some("Job completed"));
        assert_eq!(completed[0].type_.as_deref(), Some("Normal"));
        assert_eq!(
            completed[0].source.as_ref().unwrap().component.as_deref(),
            Some(COMPONENT)
        );
        // Every Pod carried the tracking finalizer, and none keeps it.
        let all: Vec<Arc<Pod>> = history.revisions().into_iter().map(|r| r.object).collect();
        assert!(all
            .iter()
            .filter(|p| p.metadata.resource_version.is_some())
            .any(|p| p
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == JOB_TRACKING_FINALIZER)));
        let current = history.current();
        let left: Vec<&Arc<Pod>> = owned_by(&current, &job).collect();
        assert_eq!(left.len(), 5);
        for pod in left {
            assert_eq!(phase(pod), "Succeeded");
            assert!(pod
                .metadata
                .finalizers
                .as_deref()
                .unwrap_or_default()
                .is_empty());
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn failures_past_the_backoff_limit_fail_the_job_and_delete_its_active_pods() {
    within(Duration::from_secs(300), async {
        let client = capstan_apiserver::testing::client();
        let _cluster = cluster(&client);
        let history = ObjectHistory::<Pod>::record(client.clone());
        let jobs = ObjectHistory::<Job>::record(client.clone());
        let controller = Running::start(client.clone());
        let job = create_job(&client, job("flaky", 4, 2, Some(1), None)).await;

        history
            .wait_until(|state| running(state, &job).len() == 2)
            .await;
        let first = running(&history.current(), &job);
        let (doomed, survivor) = (first[0].clone(), first[1].clone());
        finish(&client, &doomed, "Failed").await;
        let failed_at = Instant::now();

        // One failure: the replacement waits out the 10 s backoff.
        history
            .wait_until(|state| {
                let now = running(state, &job);
                now.len() == 2 && now.iter().all(|p| p.metadata.uid != doomed.metadata.uid)
            })
            .await;
        assert!(
            failed_at.elapsed() >= Duration::from_secs(10),
            "replaced after {:?}",
            failed_at.elapsed()
        );
        let replacement = running(&history.current(), &job)
            .into_iter()
            .find(|p| p.metadata.uid != survivor.metadata.uid)
            .unwrap();
        finish(&client, &replacement, "Failed").await;

        // Two failures with backoffLimit 1: the Job fails and its last Pod goes.
        wait_for_condition(&jobs, "flaky", "Failed").await;
        history
            .wait_until(|state| owned_by(state, &job).all(|p| !p.is_active()))
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let exceeded = controller.events("BackoffLimitExceeded").await;
        let deleted = controller.events("SuccessfulDelete").await;
        let created = controller.events("SuccessfulCreate").await;
        controller.stop().await;

        let status = job_status(&client, "flaky").await;
        let conditions = status.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "Failed");
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("BackoffLimitExceeded")
        );
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
        // The two failures, and the survivor deleted with the Job's failure.
        assert_eq!(status.failed, Some(3));
        assert_eq!(status.succeeded, Some(0));
        assert_eq!(status.active, Some(0));
        assert_eq!(status.uncounted_terminated_pods, None);
        assert_eq!(status.completion_time, None);

        assert_eq!(exceeded.len(), 1);
        assert_eq!(exceeded[0].type_.as_deref(), Some("Warning"));
        assert_eq!(
            deleted
                .iter()
                .map(|e| e.message.clone().unwrap())
                .collect::<Vec<_>>(),
            [format!(
                "Deleted pod: {}",
                survivor.metadata.name.as_deref().unwrap()
            )]
        );
        assert_eq!(created.len(), 3);
        // The survivor is gone entirely: its finalizer was removed once counted.
        assert!(!history
            .current()
            .contains_key(&ObjectKey::of(survivor.as_ref())));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_job_running_past_its_active_deadline_fails_with_deadline_exceeded() {
    within(Duration::from_secs(300), async {
        let client = capstan_apiserver::testing::client();
        let _cluster = cluster(&client);
        let history = ObjectHistory::<Pod>::record(client.clone());
        let jobs = ObjectHistory::<Job>::record(client.clone());
        let controller = Running::start(client.clone());
        let started = Instant::now();
        let job = create_job(&client, job("slow", 2, 2, None, Some(30))).await;

        history
            .wait_until(|state| running(state, &job).len() == 2)
            .await;
        wait_for_condition(&jobs, "slow", "Failed").await;
        let failed_after = started.elapsed();
        // `startTime` is stored to the second, as in Kubernetes: up to a second early.
        assert!(
            failed_after >= Duration::from_secs(29) && failed_after < Duration::from_secs(32),
            "failed after {failed_after:?}"
        );
        history
            .wait_until(|state| owned_by(state, &job).next().is_none())
            .await;
        let exceeded = controller.events("DeadlineExceeded").await;
        let deleted = controller.events("SuccessfulDelete").await;
        controller.stop().await;

        let status = job_status(&client, "slow").await;
        let condition = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(condition.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(
            condition.message.as_deref(),
            Some("Job was active longer than specified deadline")
        );
        assert_eq!(status.failed, Some(2));
        assert_eq!(status.active, Some(0));
        assert_eq!(exceeded.len(), 1);
        assert_eq!(
            exceeded[0].message.as_deref(),
            Some("Job was active longer than specified deadline")
        );
        assert_eq!(deleted.len(), 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn pods_finished_and_deleted_while_the_controller_is_down_are_still_counted() {
    within(Duration::from_secs(300), async {
        let client = capstan_apiserver::testing::client();
        let _cluster = cluster(&client);
        let history = ObjectHistory::<Pod>::record(client.clone());
        let jobs = ObjectHistory::<Job>::record(client.clone());
        let controller = Running::start(client.clone());
        let job = create_job(&client, job("batch", 3, 2, None, None)).await;
        history
            .wait_until(|state| running(state, &job).len() == 2)
            .await;
        controller.stop().await;

        // While no controller runs, one Pod succeeds and both are deleted.
        let pair = running(&history.current(), &job);
        finish(&client, &pair[0], "Succeeded").await;
        for pod in &pair {
            pods(&client)
                .delete(
                    pod.metadata.name.as_deref().unwrap(),
                    &DeleteParams::default(),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The tracking finalizer holds them, the kubelet's final delete notwithstanding.
        for pod in &pair {
            let held = pods(&client)
                .get(pod.metadata.name.as_deref().unwrap())
                .await
                .unwrap();
            assert!(held.metadata.deletion_timestamp.is_some());
        }

        let succeed = succeed_running_pods(client.clone(), Duration::from_secs(2));
        let controller = Running::start(client.clone());
        wait_for_condition(&jobs, "batch", "Complete").await;
        succeed.abort();
        tokio::time::sleep(Duration::from_secs(5)).await;
        controller.stop().await;

        let status = job_status(&client, "batch").await;
        // The deleted running Pod failed; the deleted succeeded one counts as a success.
        assert_eq!(status.succeeded, Some(3));
        assert_eq!(status.failed, Some(1));
        assert_eq!(status.uncounted_terminated_pods, None);
        for pod in &pair {
            assert!(!history.current().contains_key(&ObjectKey::of(pod.as_ref())));
        }
        // Counted exactly once: the succeeded count never went past 3 at any revision.
        for (revision, state) in jobs.states() {
            let Some(job) = state.get(&ObjectKey::namespaced(NS, "batch")) else {
                continue;
            };
            let status = job.status.clone().unwrap_or_default();
            assert!(
                status.succeeded.unwrap_or(0) <= 3 && status.failed.unwrap_or(0) <= 1,
                "{status:?} at {revision}"
            );
        }
        let created = history
            .revisions()
            .into_iter()
            .filter(|r| r.change == capstan_controller::testing::Change::Added)
            .count();
        assert_eq!(created, 4, "two pods, then the two still needed");
    })
    .await;
}
