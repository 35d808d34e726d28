//! Leader election on a `coordination.k8s.io/v1` [`Lease`], with client-go's semantics.
//!
//! Several replicas of a component run [`LeaderElector`]s on the same Lease; at most one of
//! them leads at any time, and only the leader does the work. Everything goes through the
//! [`Client`](capstan_api::Client) (an [`Api<Lease>`]), so candidates may run in one process
//! or in many.
//!
//! # The record
//!
//! The Lease's spec is written as client-go's `LeaseLock` writes it: `holderIdentity`,
//! `leaseDurationSeconds`, `acquireTime` (kept while the same holder renews), `renewTime`
//! (every successful acquire or renew) and `leaseTransitions` (incremented whenever the
//! holder changes, including after a release). Every acquire, renew and release is an update
//! carrying the `resourceVersion` just read, so two candidates can never both succeed: the
//! loser gets 409 Conflict and reads again on its next attempt.
//!
//! # When a candidate may take the lease
//!
//! Only when the lease is free (no holder, e.g. after a release) or expired. Expiry is judged
//! by the candidate's own monotonic clock, never by the remote timestamps: a candidate notes
//! the instant it *observed* the record change, and the lease expires
//! `leaseDurationSeconds` after that observation. Skewed wall clocks between machines
//! therefore cannot make a live lease look expired. (As in Kubernetes, clocks are assumed to
//! run at about the same *rate*.)
//!
//! # Fencing
//!
//! A leader renews every `retry_period`. Its leadership is valid until `renew_deadline` after
//! it *sent* its last successful acquire or renew request. Any other candidate observes that
//! write no earlier than it happened, so it cannot take over before `lease_duration` after
//! the send. Since `renew_deadline < lease_duration` (checked by
//! [`LeaderElectionConfig::validate`]), a leader that cannot renew stops leading strictly
//! before anyone else may start. Leadership also ends at once when a renew finds another
//! holder in the record.
//!
//! Leadership is a [`Leadership`] (owned; dropping it stops renewing without releasing, as if
//! the process died) and any number of [`LeaderToken`]s handed to work started as leader.
//! [`LeaderToken::lost`] resolves when leadership ends, at the latest at the deadline even if
//! the renew task is stuck, and [`LeaderToken::is_leader`] reads the same deadline, so work
//! can check or be cancelled. [`LeaderElector::run`] does both for a future: it runs it only
//! while leading and drops it the moment leadership is lost.
//!
//! [`Leadership::release`] (or [`LeaderElectionConfig::release_on_cancel`] with `run`) stops
//! leading first, then clears the holder, setting `leaseDurationSeconds` to 1 as client-go
//! does, so another candidate takes over on its next attempt instead of waiting for expiry.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::{k8s_openapi::api::coordination::v1::Lease, Api, Client};
//! use capstan_controller::leader::{default_identity, LeaderElectionConfig, LeaderElector, RunOutcome};
//!
//! async fn main_loop(
//!     client: Arc<dyn Client>,
//!     shutdown: impl std::future::Future<Output = ()>,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let leases: Api<Lease> = Api::namespaced(client, "kube-system");
//!     let config = LeaderElectionConfig::default().release_on_cancel(true);
//!     let elector = LeaderElector::new(leases, "my-controller", default_identity(), config)?;
//!     let outcome = elector
//!         .run(shutdown, |token| async move {
//!             while token.is_leader() {
//!                 // reconcile ...
//!                 tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!             }
//!         })
//!         .await;
//!     if outcome == RunOutcome::Lost {
//!         // Exit and let the process restart, as Kubernetes components do.
//!     }
//!     Ok(())
//! }
//! ```

use std::{fmt, future::Future, sync::Arc, time::Duration};

use capstan_api::{
    k8s_openapi::{
        api::coordination::v1::{Lease, LeaseSpec},
        apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::Timestamp,
    },
    kube_core::{params::PostParams, ObjectMeta},
    Api, Error,
};
use capstan_watch::backoff::jitter;
use parking_lot::Mutex;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{sleep, sleep_until, timeout, timeout_at, Instant},
};

use crate::retry::retry_on_conflict;

/// Kubernetes' default lease duration: how long after observing a record change a candidate
/// waits before it may take the lease.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Kubernetes' default renew deadline: how long a leader keeps leading without a successful
/// renew.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Kubernetes' default retry period: the interval between acquire or renew attempts.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// client-go's jitter factor: a candidate waits between `retry_period` and
/// `retry_period * (1 + JITTER_FACTOR)` between acquire attempts.
pub const JITTER_FACTOR: f64 = 1.2;

/// Timing of leader election; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// How long a lease stays valid for other candidates after they observe it renewed.
    /// Written as `leaseDurationSeconds`, so it must be a whole number of seconds.
    pub lease_duration: Duration,
    /// How long the leader keeps leading after sending its last successful renew. Must be
    /// shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
    /// Whether [`LeaderElector::run`] releases the lease when its work finishes or shutdown
    /// is requested (not when leadership was lost).
    pub release_on_cancel: bool,
}

impl Default for LeaderElectionConfig {
    /// Kubernetes' defaults: 15 s, 10 s, 2 s, no release on cancel (as client-go).
    fn default() -> Self {
        LeaderElectionConfig {
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            release_on_cancel: false,
        }
    }
}

impl LeaderElectionConfig {
    /// Sets [`lease_duration`](Self::lease_duration).
    pub fn lease_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self
    }

    /// Sets [`renew_deadline`](Self::renew_deadline).
    pub fn renew_deadline(mut self, renew_deadline: Duration) -> Self {
        self.renew_deadline = renew_deadline;
        self
    }

    /// Sets [`retry_period`](Self::retry_period).
    pub fn retry_period(mut self, retry_period: Duration) -> Self {
        self.retry_period = retry_period;
        self
    }

    /// Sets [`release_on_cancel`](Self::release_on_cancel).
    pub fn release_on_cancel(mut self, release: bool) -> Self {
        self.release_on_cancel = release;
        self
    }

    /// Checks client-go's constraints: `lease_duration > renew_deadline > JITTER_FACTOR *
    /// retry_period > 0`, plus a `lease_duration` of whole seconds that fits
    /// `leaseDurationSeconds`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retry_period.is_zero() {
            return Err(ConfigError::ZeroRetryPeriod);
        }
        let seconds = self.lease_duration.as_secs();
        if self.lease_duration.subsec_nanos() != 0 || seconds == 0 || seconds > i32::MAX as u64 {
            return Err(ConfigError::LeaseDurationNotWholeSeconds {
                lease_duration: self.lease_duration,
            });
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseDurationNotAboveRenewDeadline {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(ConfigError::RenewDeadlineNotAboveJitteredRetry {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        // Validated to fit.
        self.lease_duration.as_secs() as i32
    }
}

/// A leader election set up wrongly; returned by [`LeaderElector::new`] and
/// [`LeaderElectionConfig::validate`]. Not retryable: fix the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The lease duration is not above the renew deadline, so a leader could keep acting
    /// after others see its lease expire.
    #[error(
        "leaseDuration must be greater than renewDeadline (leaseDuration {lease_duration:?}, \
         renewDeadline {renew_deadline:?})"
    )]
    LeaseDurationNotAboveRenewDeadline {
        /// The configured lease duration.
        lease_duration: Duration,
        /// The configured renew deadline.
        renew_deadline: Duration,
    },
    /// The renew deadline leaves room for less than one jittered retry.
    #[error(
        "renewDeadline must be greater than retryPeriod*JitterFactor (renewDeadline \
         {renew_deadline:?}, retryPeriod {retry_period:?}, JitterFactor {JITTER_FACTOR})"
    )]
    RenewDeadlineNotAboveJitteredRetry {
        /// The configured renew deadline.
        renew_deadline: Duration,
        /// The configured retry period.
        retry_period: Duration,
    },
    /// `leaseDurationSeconds` is an integer: the lease duration must be whole seconds, at
    /// least one.
    #[error(
        "leaseDuration must be a whole number of seconds, at least 1 (got {lease_duration:?})"
    )]
    LeaseDurationNotWholeSeconds {
        /// The configured lease duration.
        lease_duration: Duration,
    },
    /// The retry period is zero.
    #[error("retryPeriod must be greater than zero")]
    ZeroRetryPeriod,
    /// The candidate has no identity.
    #[error("leader election identity must not be empty")]
    EmptyIdentity,
    /// The lease has no name.
    #[error("lease name must not be empty")]
    EmptyLeaseName,
    /// The `Api<Lease>` is not bound to a namespace (built with `Api::all`).
    #[error("the Lease API handle must be bound to a namespace")]
    NoNamespace,
}

/// An identity unique to this process: `<hostname>_<uuid>`, as Kubernetes components build
/// theirs.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// How [`LeaderElector::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Shutdown was requested before this candidate ever led.
    NeverLed,
    /// Leadership was lost (renewals failed past the deadline, or another holder appeared);
    /// the work was dropped.
    Lost,
    /// Shutdown was requested while leading; the work was dropped.
    Shutdown,
    /// The work finished on its own while leading.
    Finished,
}

/// One candidate for one Lease; see the [module docs](self). Cheap to clone: clones share
/// what was observed of the record.
#[derive(Clone)]
pub struct LeaderElector {
    inner: Arc<Inner>,
}

struct Inner {
    leases: Api<Lease>,
    name: String,
    identity: String,
    config: LeaderElectionConfig,
    observed: Mutex<Observed>,
}

/// The record as last read, and when (by our monotonic clock) it last changed.
#[derive(Default)]
struct Observed {
    spec: Option<LeaseSpec>,
    at: Option<Instant>,
}

/// What one acquire-or-renew attempt did.
enum Attempt {
    /// We hold the lease; the successful request was sent at `sent`.
    Held { sent: Instant },
    /// Someone else holds a lease that has not expired by our observation (or, when
    /// renewing, someone else holds it at all).
    HeldByOther(Option<String>),
    /// The API call failed; try again later.
    Failed(Error),
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("namespace", &self.inner.leases.namespace())
            .field("lease", &self.inner.name)
            .field("identity", &self.inner.identity)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// A candidate named `identity` for the Lease `name` in `leases`' namespace.
    ///
    /// The identity must be unique among the candidates: two candidates with the same
    /// identity both believe they hold the lease. [`default_identity`] gives a unique one.
    ///
    /// Errors: a [`ConfigError`] when the configuration breaks client-go's constraints, the
    /// identity or name is empty, or `leases` has no namespace.
    pub fn new(
        leases: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        config: LeaderElectionConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (name, identity) = (name.into(), identity.into());
        if identity.is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        if name.is_empty() {
            return Err(ConfigError::EmptyLeaseName);
        }
        if leases.namespace().is_none() {
            return Err(ConfigError::NoNamespace);
        }
        Ok(LeaderElector {
            inner: Arc::new(Inner {
                leases,
                name,
                identity,
                config,
                observed: Mutex::new(Observed::default()),
            }),
        })
    }

    /// This candidate's identity, as written in `holderIdentity`.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The configuration.
    pub fn config(&self) -> &LeaderElectionConfig {
        &self.inner.config
    }

    /// The holder in the record as last read by this candidate (`None`: not read yet, or no
    /// holder).
    pub fn observed_leader(&self) -> Option<String> {
        self.inner
            .observed
            .lock()
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.clone())
            .filter(|holder| !holder.is_empty())
    }

    /// Waits until this candidate holds the lease, retrying every `retry_period` (jittered
    /// by [`JITTER_FACTOR`]) through API errors and conflicts, then starts renewing in the
    /// background.
    ///
    /// Cancel by dropping the future. Dropped in the middle of a write that then succeeds,
    /// the lease stays taken until it expires.
    pub async fn acquire(&self) -> Leadership {
        let config = &self.inner.config;
        loop {
            let attempt =
                match timeout(config.renew_deadline, self.try_acquire_or_renew(false)).await {
                    Ok(attempt) => attempt,
                    Err(_) => Attempt::Failed(Error::Timeout {
                        message: "acquiring the lease took longer than the renew deadline".into(),
                    }),
                };
            match attempt {
                Attempt::Held { sent } => {
                    let until = sent + config.renew_deadline;
                    if Instant::now() < until {
                        tracing::info!(
                            lease = %self.inner.name,
                            identity = %self.inner.identity,
                            "acquired the lease"
                        );
                        return Leadership::start(self.clone(), until);
                    }
                }
                Attempt::HeldByOther(holder) => {
                    tracing::trace!(lease = %self.inner.name, ?holder, "lease held by another candidate");
                }
                Attempt::Failed(error) => {
                    tracing::debug!(lease = %self.inner.name, %error, "failed to acquire the lease");
                }
            }
            sleep(jitter(config.retry_period, JITTER_FACTOR)).await;
        }
    }

    /// Runs `leading` while this candidate leads: waits to acquire the lease, then polls the
    /// future returned by `leading` until it finishes, leadership is lost, or `shutdown`
    /// resolves, dropping it in the latter two cases. Returns which happened.
    ///
    /// With [`release_on_cancel`](LeaderElectionConfig::release_on_cancel), the lease is
    /// released after `Finished` or `Shutdown`; otherwise it is left to expire.
    pub async fn run<F, Fut>(&self, shutdown: impl Future<Output = ()>, leading: F) -> RunOutcome
    where
        F: FnOnce(LeaderToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let leadership = tokio::select! {
            leadership = self.acquire() => leadership,
            () = &mut shutdown => return RunOutcome::NeverLed,
        };
        let token = leadership.token();
        let work = leading(token.clone());
        tokio::pin!(work);
        let outcome = tokio::select! {
            biased;
            () = token.lost() => RunOutcome::Lost,
            () = &mut shutdown => RunOutcome::Shutdown,
            () = &mut work => RunOutcome::Finished,
        };
        if outcome == RunOutcome::Lost {
            tracing::warn!(lease = %self.inner.name, identity = %self.inner.identity, "leadership lost");
        }
        if outcome != RunOutcome::Lost && self.inner.config.release_on_cancel {
            if let Err(error) = leadership.release().await {
                tracing::warn!(lease = %self.inner.name, %error, "failed to release the lease");
            }
        }
        outcome
    }

    /// Notes the record just read; its change time is when we saw it change.
    fn observe(&self, spec: &LeaseSpec) {
        let mut observed = self.inner.observed.lock();
        if observed.spec.as_ref() != Some(spec) {
            observed.spec = Some(spec.clone());
            observed.at = Some(Instant::now());
        }
    }

    /// client-go's `tryAcquireOrRenew`. When `renewing`, any holder but us ends leadership.
    async fn try_acquire_or_renew(&self, renewing: bool) -> Attempt {
        let inner = &self.inner;
        let sent = Instant::now();
        let now = MicroTime(Timestamp::now());
        let current = match inner.leases.get_opt(&inner.name).await {
            Ok(current) => current,
            Err(error) => return Attempt::Failed(error),
        };
        let Some(mut lease) = current else {
            if renewing {
                // The lease was deleted under us: someone else may be creating it.
                return Attempt::HeldByOther(None);
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(inner.name.clone()),
                    namespace: inner.leases.namespace().map(str::to_string),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(inner.identity.clone()),
                    lease_duration_seconds: Some(inner.config.lease_duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match inner.leases.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created.spec.unwrap_or_default());
                    Attempt::Held { sent }
                }
                Err(error) => Attempt::Failed(error),
            };
        };

        let old = lease.spec.take().unwrap_or_default();
        self.observe(&old);
        let holder = old.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(inner.identity.as_str());
        if renewing && !ours {
            return Attempt::HeldByOther(holder);
        }
        if !ours && holder.is_some() {
            let observed_at = self.inner.observed.lock().at.unwrap_or(sent);
            let duration =
                Duration::from_secs(old.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            if Instant::now() < observed_at + duration {
                return Attempt::HeldByOther(holder);
            }
        }
        let transitions = old.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(inner.identity.clone()),
            lease_duration_seconds: Some(inner.config.lease_duration_seconds()),
            acquire_time: if ours {
                old.acquire_time.clone().or_else(|| Some(now.clone()))
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..old
        });
        // `lease.metadata` carries the resourceVersion just read: a concurrent writer makes
        // this a 409 Conflict.
        match inner.leases.update(&PostParams::default(), &lease).await {
            Ok(updated) => {
                self.observe(&updated.spec.unwrap_or_default());
                Attempt::Held { sent }
            }
            Err(error) => Attempt::Failed(error),
        }
    }

    /// client-go's `release`: clears the holder if it is still us.
    async fn release_lease(&self) -> Result<(), Error> {
        let inner = &self.inner;
        retry_on_conflict(3, |_| async {
            let Some(mut lease) = inner.leases.get_opt(&inner.name).await? else {
                return Ok(());
            };
            let old = lease.spec.take().unwrap_or_default();
            self.observe(&old);
            if old.holder_identity.as_deref() != Some(inner.identity.as_str()) {
                return Ok(());
            }
            let now = MicroTime(Timestamp::now());
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..old
            });
            let updated = inner.leases.update(&PostParams::default(), &lease).await?;
            self.observe(&updated.spec.unwrap_or_default());
            tracing::info!(lease = %inner.name, identity = %inner.identity, "released the lease");
            Ok(())
        })
        .await
    }
}

/// Whether a leader still leads; shared between [`Leadership`] and its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Leading until the instant, unless renewed before it.
    Leading { until: Instant },
    /// No longer leading; final.
    Lost,
}

/// Leadership of a Lease, as returned by [`LeaderElector::acquire`]: renews in a background
/// task while it lives.
///
/// Dropping it stops renewing and ends leadership at once, without releasing the lease
/// (others take over once it expires), like a crashed process. [`release`](Self::release)
/// steps down gracefully. Must be created inside a tokio runtime.
pub struct Leadership {
    elector: LeaderElector,
    state: Arc<watch::Sender<State>>,
    renewer: JoinHandle<()>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("identity", &self.elector.identity())
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Leadership {
    fn start(elector: LeaderElector, until: Instant) -> Self {
        let (state, _) = watch::channel(State::Leading { until });
        let state = Arc::new(state);
        let renewer = tokio::spawn(renew_loop(elector.clone(), state.clone(), until));
        Leadership {
            elector,
            state,
            renewer,
        }
    }

    /// A token for work started as leader.
    pub fn token(&self) -> LeaderToken {
        LeaderToken {
            state: self.state.subscribe(),
            identity: self.elector.inner.identity.clone().into(),
        }
    }

    /// Whether this candidate still leads; see [`LeaderToken::is_leader`].
    pub fn is_leader(&self) -> bool {
        is_leading(*self.state.borrow())
    }

    /// Resolves when leadership is lost; see [`LeaderToken::lost`].
    pub async fn lost(&self) {
        self.token().lost().await
    }

    /// Steps down: stops leading (every token reports the loss) and renewing, then clears
    /// the holder in the record if it is still this candidate, so another candidate can take
    /// over without waiting for expiry.
    ///
    /// Errors: the API error of the final attempt. Leadership has ended either way; on an
    /// error the lease simply expires.
    pub async fn release(self) -> Result<(), Error> {
        self.end();
        self.elector.release_lease().await
    }

    fn end(&self) {
        self.state.send_replace(State::Lost);
        self.renewer.abort();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.end();
    }
}

/// A cheap, cloneable view of a [`Leadership`], for work started as leader.
#[derive(Clone)]
pub struct LeaderToken {
    state: watch::Receiver<State>,
    identity: Arc<str>,
}

impl fmt::Debug for LeaderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderToken")
            .field("identity", &self.identity)
            .field("is_leader", &self.is_leader())
            .finish()
    }
}

impl LeaderToken {
    /// The leader's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this candidate still leads: leadership has not ended and the renew deadline
    /// of the last successful renew has not passed. Once `false`, it stays `false`.
    pub fn is_leader(&self) -> bool {
        is_leading(*self.state.borrow())
    }

    /// The instant leadership ends unless renewed before; `None` once it has ended.
    pub fn valid_until(&self) -> Option<Instant> {
        match *self.state.borrow() {
            State::Leading { until } if Instant::now() < until => Some(until),
            _ => None,
        }
    }

    /// Resolves when leadership is lost: at the renew deadline without a successful renew
    /// (whatever the renew task is doing), when a renew finds another holder, or when the
    /// [`Leadership`] is released or dropped. Resolves at once if already lost.
    pub async fn lost(&self) {
        let mut state = self.state.clone();
        loop {
            let until = match *state.borrow_and_update() {
                State::Lost => return,
                State::Leading { until } => until,
            };
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                // A renewal that landed before the deadline wins over the deadline.
                biased;
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(until) => {}
            }
        }
    }
}

fn is_leading(state: State) -> bool {
    match state {
        State::Leading { until } => Instant::now() < until,
        State::Lost => false,
    }
}

/// Renews every `retry_period`; ends leadership at the deadline or on another holder.
async fn renew_loop(elector: LeaderElector, state: Arc<watch::Sender<State>>, mut until: Instant) {
    let inner = &elector.inner;
    let config = &inner.config;
    let mut next = Instant::now() + config.retry_period;
    loop {
        sleep_until(next.min(until)).await;
        if Instant::now() >= until {
            tracing::warn!(lease = %inner.name, identity = %inner.identity, "failed to renew the lease within the renew deadline");
            break;
        }
        next = Instant::now() + config.retry_period;
        // The attempt cannot outlive leadership.
        match timeout_at(until, elector.try_acquire_or_renew(true)).await {
            Ok(Attempt::Held { sent }) => {
                if Instant::now() >= until {
                    // Tokens may already have reported the loss: it is final.
                    break;
                }
                // `sent` is after the previous deadline's start, so this only extends it.
                until = until.max(sent + config.renew_deadline);
                state.send_replace(State::Leading { until });
            }
            Ok(Attempt::HeldByOther(holder)) => {
                tracing::warn!(lease = %inner.name, identity = %inner.identity, ?holder, "the lease has another holder");
                break;
            }
            Ok(Attempt::Failed(error)) => {
                tracing::debug!(lease = %inner.name, %error, "failed to renew the lease");
            }
            Err(_) => {}
        }
    }
    state.send_replace(State::Lost);
}
