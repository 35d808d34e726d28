//! Leader election on a Lease over the in-process registry, under tokio's paused clock with
//! Kubernetes' default timing (15 s lease, 10 s renew deadline, 2 s retry period).

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use capstan_api::{
    k8s_openapi::{
        api::coordination::v1::{Lease, LeaseSpec},
        apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::{Timestamp, ToSpan},
    },
    kube_core::{params::PostParams, ObjectMeta},
    Api, Client,
};
use capstan_controller::leader::{
    default_identity, ConfigError, LeaderElectionConfig, LeaderElector, LeaderToken, Leadership,
    RunOutcome,
};
use parking_lot::Mutex;
use support::{FaultyClient, Mode};
use tokio::{
    sync::oneshot,
    time::{sleep, Instant},
};

const NAMESPACE: &str = "kube-system";
const LEASE: &str = "controller-manager";
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The longest a candidate waits between two acquire attempts (jitter factor 1.2).
const MAX_RETRY_WAIT: Duration = Duration::from_millis(4400);

fn elector(client: Arc<dyn Client>, identity: &str) -> LeaderElector {
    elector_with(client, identity, LeaderElectionConfig::default())
}

fn elector_with(
    client: Arc<dyn Client>,
    identity: &str,
    config: LeaderElectionConfig,
) -> LeaderElector {
    LeaderElector::new(Api::namespaced(client, NAMESPACE), LEASE, identity, config).unwrap()
}

async fn lease(client: &Arc<dyn Client>) -> LeaseSpec {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases.get(LEASE).await.unwrap().spec.unwrap()
}

/// Starts `elector` acquiring in the background; resolves with the leadership and when it
/// was acquired.
fn acquire_in_background(
    elector: &LeaderElector,
) -> tokio::task::JoinHandle<(Leadership, Instant)> {
    let elector = elector.clone();
    tokio::spawn(async move {
        let leadership = elector.acquire().await;
        (leadership, Instant::now())
    })
}

/// The instant the last successful acquire or renew was sent, from a token still leading.
fn last_renew(token: &LeaderToken) -> Instant {
    token.valid_until().expect("still leading") - RENEW_DEADLINE
}

#[tokio::test(start_paused = true)]
async fn a_single_candidate_acquires_and_writes_the_record_as_client_go() {
    let client = capstan_apiserver::testing::client();
    let a = elector(client.clone(), "a");
    let leadership = a.acquire().await;
    assert!(leadership.is_leader());
    let token = leadership.token();
    assert!(token.is_leader());
    assert_eq!(token.identity(), "a");

    let first = lease(&client).await;
    assert_eq!(first.holder_identity.as_deref(), Some("a"));
    assert_eq!(first.lease_duration_seconds, Some(15));
    assert_eq!(first.lease_transitions, Some(0));
    assert!(first.acquire_time.is_some());
    assert_eq!(first.renew_time, first.acquire_time);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let version = leases.get(LEASE).await.unwrap().metadata.resource_version;

    // Renewals every retry period keep the acquire time and the transitions.
    sleep(Duration::from_secs(9)).await;
    let renewed = leases.get(LEASE).await.unwrap();
    assert_ne!(renewed.metadata.resource_version, version);
    let renewed = renewed.spec.unwrap();
    assert_eq!(renewed.holder_identity.as_deref(), Some("a"));
    assert_eq!(renewed.acquire_time, first.acquire_time);
    assert!(renewed.renew_time >= first.renew_time);
    assert_eq!(renewed.lease_transitions, Some(0));
    assert!(token.is_leader());
    assert!(last_renew(&token) >= Instant::now() - RETRY_PERIOD);
    assert_eq!(a.observed_leader().as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_second_candidate_waits_while_the_leader_renews() {
    let client = capstan_apiserver::testing::client();
    let a = elector(client.clone(), "a");
    let b = elector(client.clone(), "b");
    let leading = a.acquire().await;
    let waiting = acquire_in_background(&b);

    sleep(Duration::from_secs(120)).await;
    assert!(!waiting.is_finished(), "b acquired a lease a kept renewing");
    assert!(leading.is_leader());
    assert_eq!(b.observed_leader().as_deref(), Some("a"));
    assert_eq!(lease(&client).await.holder_identity.as_deref(), Some("a"));
    waiting.abort();
}

#[tokio::test(start_paused = true)]
async fn a_killed_leader_is_replaced_only_after_the_lease_expires() {
    let client = capstan_apiserver::testing::client();
    let a = elector(client.clone(), "a");
    let b = elector(client.clone(), "b");
    let leading = a.acquire().await;
    let token = leading.token();
    let waiting = acquire_in_background(&b);

    sleep(Duration::from_secs(7)).await;
    let last_renew = last_renew(&token);
    drop(leading); // the process dies: no release
    assert!(!token.is_leader());
    token.lost().await;

    let (b_leading, acquired) = waiting.await.unwrap();
    assert!(
        acquired >= last_renew + LEASE_DURATION,
        "b took over {:?} after a's last renew, before the lease expired",
        acquired - last_renew
    );
    // b observed the last renew within one retry wait, and retries within another.
    assert!(acquired <= last_renew + LEASE_DURATION + 2 * MAX_RETRY_WAIT);
    assert!(b_leading.is_leader());
    let spec = lease(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(start_paused = true)]
async fn expiry_counts_from_the_candidates_observation_not_the_remote_timestamps() {
    let client = capstan_apiserver::testing::client();
    // A holder whose clock is an hour behind, or that stopped renewing long ago: either
    // way the candidate cannot tell, and waits a full lease duration from its observation.
    let stale = MicroTime(Timestamp::now() - 1.hour());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("ghost".into()),
                    lease_duration_seconds: Some(15),
                    acquire_time: Some(stale.clone()),
                    renew_time: Some(stale),
                    lease_transitions: Some(4),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await
        .unwrap();

    let started = Instant::now();
    let a = elector(client.clone(), "a");
    let _leading = a.acquire().await;
    let waited = Instant::now() - started;
    assert!(waited >= LEASE_DURATION, "took over after {waited:?}");
    assert!(waited <= LEASE_DURATION + MAX_RETRY_WAIT);
    let spec = lease(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(5));
}

#[tokio::test(start_paused = true)]
async fn of_many_simultaneous_candidates_exactly_one_leads() {
    let client = capstan_apiserver::testing::client();
    let candidates: Vec<_> = (0..5)
        .map(|i| acquire_in_background(&elector(client.clone(), &format!("c{i}"))))
        .collect();
    sleep(Duration::from_secs(60)).await;
    let finished: Vec<_> = candidates.iter().filter(|c| c.is_finished()).collect();
    assert_eq!(finished.len(), 1);
    let mut leaders = Vec::new();
    for candidate in candidates {
        if candidate.is_finished() {
            leaders.push(candidate.await.unwrap().0);
        } else {
            candidate.abort();
        }
    }
    assert!(leaders[0].is_leader());
    assert_eq!(lease(&client).await.lease_transitions, Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_stops_before_the_lease_could_expire() {
    let shared = capstan_apiserver::testing::client();
    let faulty = FaultyClient::new(shared.clone(), 1);
    let a = elector(faulty.clone(), "a");
    let b = elector(shared.clone(), "b");
    let leading = a.acquire().await;
    let token = leading.token();
    let waiting = acquire_in_background(&b);

    sleep(Duration::from_secs(5)).await;
    faulty.set_mode(Mode::Failing);
    let last_ok = faulty.last_ok_write_start().unwrap();
    token.lost().await;
    let lost = Instant::now();
    assert!(!leading.is_leader());
    assert!(
        lost <= last_ok + RENEW_DEADLINE,
        "led {:?} past the last renew",
        lost - last_ok
    );
    assert!(lost >= last_ok + RENEW_DEADLINE - RETRY_PERIOD);
    assert!(faulty.failures() >= 4, "renewals were retried");

    let (_b_leading, acquired) = waiting.await.unwrap();
    assert!(acquired >= last_ok + LEASE_DURATION);
    assert!(acquired > lost);
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_hang_stops_at_the_renew_deadline() {
    let faulty = FaultyClient::new(capstan_apiserver::testing::client(), 2);
    let a = elector(faulty.clone(), "a");
    let leading = a.acquire().await;
    let token = leading.token();
    sleep(Duration::from_secs(3)).await;
    let last_renew = last_renew(&token);
    faulty.set_mode(Mode::Hanging);

    token.lost().await;
    assert_eq!(Instant::now(), last_renew + RENEW_DEADLINE);
    assert!(!token.is_leader());
    assert_eq!(token.valid_until(), None);
}

#[tokio::test(start_paused = true)]
async fn run_drops_the_work_when_leadership_is_lost() {
    let faulty = FaultyClient::new(capstan_apiserver::testing::client(), 3);
    let a = elector(faulty.clone(), "a");
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Mutex::new(None));

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let fail_later = {
        let faulty = faulty.clone();
        async move {
            sleep(Duration::from_secs(6)).await;
            faulty.set_mode(Mode::Failing);
        }
    };
    tokio::spawn(fail_later);
    let outcome = a
        .run(futures::future::pending(), |token| {
            let guard = SetOnDrop(dropped.clone());
            let started = started.clone();
            async move {
                let _guard = guard;
                *started.lock() = Some(Instant::now());
                assert!(token.is_leader());
                futures::future::pending::<()>().await;
            }
        })
        .await;
    assert_eq!(outcome, RunOutcome::Lost);
    assert!(dropped.load(Ordering::SeqCst), "the work was not dropped");
    let last_ok = faulty.last_ok_write_start().unwrap();
    assert!(Instant::now() <= last_ok + RENEW_DEADLINE);
    assert!(started.lock().is_some());
}

#[tokio::test(start_paused = true)]
async fn release_hands_over_immediately() {
    let client = capstan_apiserver::testing::client();
    let a = elector(client.clone(), "a");
    let b = elector(client.clone(), "b");
    let leading = a.acquire().await;
    let token = leading.token();
    let waiting = acquire_in_background(&b);
    sleep(Duration::from_secs(5)).await;

    let released = Instant::now();
    leading.release().await.unwrap();
    assert!(!token.is_leader());
    let spec = lease(&client).await;
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(spec.lease_transitions, Some(0));

    let (b_leading, acquired) = waiting.await.unwrap();
    assert!(
        acquired - released <= MAX_RETRY_WAIT,
        "b waited {:?}",
        acquired - released
    );
    assert!(b_leading.is_leader());
    let spec = lease(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(start_paused = true)]
async fn run_releases_on_shutdown_when_configured() {
    let client = capstan_apiserver::testing::client();
    let config = LeaderElectionConfig::default().release_on_cancel(true);
    let a = elector_with(client.clone(), "a", config);
    let b = elector(client.clone(), "b");
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        a.run(
            async move {
                let _ = stopped.await;
            },
            |token| async move {
                while token.is_leader() {
                    sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .await
    });
    sleep(Duration::from_secs(1)).await;
    let waiting = acquire_in_background(&b);
    sleep(Duration::from_secs(20)).await;
    assert!(!waiting.is_finished());

    let shutdown = Instant::now();
    stop.send(()).unwrap();
    assert_eq!(run.await.unwrap(), RunOutcome::Shutdown);
    let (_b_leading, acquired) = waiting.await.unwrap();
    assert!(acquired - shutdown <= MAX_RETRY_WAIT);
}

#[tokio::test(start_paused = true)]
async fn run_reports_work_that_finishes_and_shutdown_before_leading() {
    let client = capstan_apiserver::testing::client();
    let a = elector(client.clone(), "a");
    let outcome = a.run(futures::future::pending(), |_token| async {}).await;
    assert_eq!(outcome, RunOutcome::Finished);

    // Without release_on_cancel the lease is left to expire: b cannot lead before then.
    let b = elector(client.clone(), "b");
    let outcome = b
        .run(sleep(Duration::from_secs(5)), |_token| async {})
        .await;
    assert_eq!(outcome, RunOutcome::NeverLed);
}

/// One entry of the shared log of who believes it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Start(usize, Instant),
    End(usize, Instant),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Killed,
    Released,
    RenewalsFailed,
    Flaky,
}

/// Three candidates over clients failing 10% of calls, for 30 simulated minutes: each leads
/// for a while, then is killed, releases, or has its renewals fail, and rejoins later. The
/// intervals during which each believes it leads never overlap.
#[tokio::test(start_paused = true)]
async fn leadership_intervals_never_overlap_across_failovers() {
    const CANDIDATES: usize = 3;
    let shared = capstan_apiserver::testing::client();
    let log = Arc::new(Mutex::new(Vec::<Mark>::new()));
    let endings = Arc::new(Mutex::new(Vec::<Ending>::new()));
    let tokens: Arc<Mutex<Vec<Option<LeaderToken>>>> = Arc::new(Mutex::new(vec![None; CANDIDATES]));
    let end_of_test = Instant::now() + Duration::from_secs(30 * 60);

    let mut tasks = Vec::new();
    for id in 0..CANDIDATES {
        let faulty = FaultyClient::new(shared.clone(), 100 + id as u64);
        faulty.set_mode(Mode::Flaky(0.1));
        let elector = elector(faulty.clone(), &format!("candidate-{id}"));
        let (log, endings, tokens) = (log.clone(), endings.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(id as u64);
            while Instant::now() < end_of_test {
                let leadership = elector.acquire().await;
                let token = leadership.token();
                {
                    let mut tokens = tokens.lock();
                    for (other, other_token) in tokens.iter().enumerate() {
                        if let Some(other_token) = other_token {
                            assert!(
                                !other_token.is_leader(),
                                "{id} acquired while {other} still leads"
                            );
                        }
                    }
                    tokens[id] = Some(token.clone());
                    log.lock().push(Mark::Start(id, Instant::now()));
                }
                let hold = Duration::from_millis(rng.u64(1_000..60_000));
                let ending = tokio::select! {
                    () = token.lost() => Ending::Flaky,
                    () = sleep(hold) => match rng.u8(0..3) {
                        0 => Ending::Killed,
                        1 => Ending::Released,
                        _ => Ending::RenewalsFailed,
                    },
                };
                match ending {
                    Ending::Flaky => log.lock().push(Mark::End(id, Instant::now())),
                    Ending::Killed => {
                        log.lock().push(Mark::End(id, Instant::now()));
                        drop(leadership);
                    }
                    Ending::Released => {
                        log.lock().push(Mark::End(id, Instant::now()));
                        let _ = leadership.release().await;
                    }
                    Ending::RenewalsFailed => {
                        faulty.set_mode(Mode::Failing);
                        token.lost().await;
                        log.lock().push(Mark::End(id, Instant::now()));
                        assert!(!leadership.is_leader());
                        drop(leadership);
                        faulty.set_mode(Mode::Flaky(0.1));
                    }
                }
                endings.lock().push(ending);
                sleep(Duration::from_millis(rng.u64(0..20_000))).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let log = log.lock();
    let mut leader: Option<(usize, Instant)> = None;
    let mut terms = 0;
    let mut leaders = std::collections::HashSet::new();
    for mark in log.iter() {
        match *mark {
            Mark::Start(id, at) => {
                assert_eq!(
                    leader, None,
                    "{id} started leading at {at:?} during another term"
                );
                leader = Some((id, at));
                terms += 1;
                leaders.insert(id);
            }
            Mark::End(id, at) => {
                let (current, started) = leader.take().expect("an end without a start");
                assert_eq!(current, id);
                assert!(at >= started);
            }
        }
    }
    let endings = endings.lock();
    assert!(terms >= 10, "only {terms} terms");
    assert_eq!(
        leaders.len(),
        CANDIDATES,
        "every candidate led at some point"
    );
    for ending in [Ending::Killed, Ending::Released, Ending::RenewalsFailed] {
        assert!(endings.contains(&ending), "no term ended as {ending:?}");
    }
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let config = LeaderElectionConfig::default();
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.lease_duration, Duration::from_secs(15));
    assert_eq!(config.renew_deadline, Duration::from_secs(10));
    assert_eq!(config.retry_period, Duration::from_secs(2));

    let equal = config.clone().renew_deadline(Duration::from_secs(15));
    assert!(matches!(
        equal.validate(),
        Err(ConfigError::LeaseDurationNotAboveRenewDeadline { .. })
    ));
    let jitter = config.clone().renew_deadline(Duration::from_millis(2400));
    assert!(matches!(
        jitter.validate(),
        Err(ConfigError::RenewDeadlineNotAboveJitteredRetry { .. })
    ));
    assert_eq!(
        config.clone().retry_period(Duration::ZERO).validate(),
        Err(ConfigError::ZeroRetryPeriod)
    );
    for lease_duration in [Duration::ZERO, Duration::from_millis(15_500)] {
        assert_eq!(
            config.clone().lease_duration(lease_duration).validate(),
            Err(ConfigError::LeaseDurationNotWholeSeconds { lease_duration })
        );
    }
    let short = LeaderElectionConfig::default()
        .lease_duration(Duration::from_secs(1))
        .renew_deadline(Duration::from_millis(600))
        .retry_period(Duration::from_millis(200));
    assert_eq!(short.validate(), Ok(()));

    let leases = |client: Arc<dyn Client>| Api::<Lease>::namespaced(client, NAMESPACE);
    let client = capstan_apiserver::testing::client();
    assert_eq!(
        LeaderElector::new(leases(client.clone()), LEASE, "a", equal).unwrap_err(),
        ConfigError::LeaseDurationNotAboveRenewDeadline {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(15),
        }
    );
    assert_eq!(
        LeaderElector::new(leases(client.clone()), LEASE, "", config.clone()).unwrap_err(),
        ConfigError::EmptyIdentity
    );
    assert_eq!(
        LeaderElector::new(leases(client.clone()), "", "a", config.clone()).unwrap_err(),
        ConfigError::EmptyLeaseName
    );
    assert_eq!(
        LeaderElector::new(Api::all(client), LEASE, "a", config).unwrap_err(),
        ConfigError::NoNamespace
    );
    assert_eq!(
        ConfigError::LeaseDurationNotAboveRenewDeadline {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(10),
        }
        .to_string(),
        "leaseDuration must be greater than renewDeadline (leaseDuration 10s, renewDeadline 10s)"
    );
}

#[test]
fn default_identities_are_unique() {
    let (a, b) = (default_identity(), default_identity());
    assert_ne!(a, b);
    assert!(a.contains('_'));
}
