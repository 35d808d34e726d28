//! Health checks, as every Kubernetes component serves them on `/healthz`, `/livez` and
//! `/readyz`.
//!
//! A [`HealthCheck`] has a name and passes or fails with a reason. A component groups its
//! checks in [`HealthEndpoints`]: one [`HealthChecks`] list per endpoint, each starting with
//! [`Ping`]. Running a list gives a [`HealthReport`], rendered exactly as kube-apiserver's
//! `healthz` package writes it:
//!
//! ```text
//! [+]ping ok
//! [-]etcd failed: reason withheld
//! readyz check failed
//! ```
//!
//! The reason of a failure is withheld from the report (the endpoints are public); it is what
//! the check's own path (`/readyz/etcd`) answers, and what the component logs.
//!
//! This module knows no HTTP: the API server's router and the components' small listeners
//! (`capstan-cluster`) serve it. It lives here, in the crate every component already depends
//! on, so a component adds its checks without depending on any other crate.
//!
//! ```
//! use capstan_api::health::{check_fn, HealthEndpoints};
//!
//! # futures::executor::block_on(async {
//! let endpoints = HealthEndpoints::new()
//!     .readyz(check_fn("informer-sync", || Err("2 informers not synced yet".into())));
//! let report = endpoints.readyz.run("readyz", &[]).await;
//! assert!(!report.passed());
//! assert_eq!(
//!     report.render(false),
//!     "[+]ping ok\n[-]informer-sync failed: reason withheld\nreadyz check failed\n"
//! );
//! # });
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// One named check. Implementations must be cheap and must not hang: bound any remote call
/// with a timeout, since probes call them every few seconds.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// The check's name, as it appears in reports and in its own path (`/readyz/<name>`).
    fn name(&self) -> &str;

    /// `Ok` when healthy; otherwise why not (logged and served on the check's own path,
    /// withheld from the aggregate report).
    async fn check(&self) -> Result<(), String>;
}

/// The check that always passes, `ping`: every endpoint starts with it, as in Kubernetes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ping;

#[async_trait]
impl HealthCheck for Ping {
    fn name(&self) -> &str {
        "ping"
    }

    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A check from a name and a synchronous function (see [`check_fn`]).
pub struct FnCheck<F> {
    name: String,
    check: F,
}

impl<F> fmt::Debug for FnCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F> HealthCheck for FnCheck<F>
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        (self.check)()
    }
}

/// A check named `name` that calls `check`, which must not block.
pub fn check_fn<F>(name: impl Into<String>, check: F) -> FnCheck<F>
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    FnCheck {
        name: name.into(),
        check,
    }
}

/// The checks of one endpoint, in the order they are reported. Cheap to clone.
#[derive(Clone, Default)]
pub struct HealthChecks {
    checks: Vec<Arc<dyn HealthCheck>>,
}

impl fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl HealthChecks {
    /// No checks (running it reports `ping` alone, as Kubernetes does for an empty list).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `check` at the end; a check of the same name is replaced in place.
    #[must_use]
    pub fn with(mut self, check: impl HealthCheck) -> Self {
        self.push(Arc::new(check));
        self
    }

    /// Adds a shared `check` at the end; a check of the same name is replaced in place.
    pub fn push(&mut self, check: Arc<dyn HealthCheck>) {
        match self.checks.iter_mut().find(|c| c.name() == check.name()) {
            Some(existing) => *existing = check,
            None => self.checks.push(check),
        }
    }

    /// The checks' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.checks.iter().map(|c| c.name()).collect()
    }

    /// The check named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn HealthCheck>> {
        self.checks.iter().find(|c| c.name() == name)
    }

    /// Runs every check (concurrently) but the `excluded` ones, for the endpoint named
    /// `endpoint` (`healthz`, `livez`, `readyz`: the last line of the report names it).
    pub async fn run(&self, endpoint: &str, excluded: &[String]) -> HealthReport {
        let ping: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(Ping)];
        let checks = if self.checks.is_empty() {
            &ping
        } else {
            &self.checks
        };
        let mut unmatched: BTreeSet<String> = excluded.iter().cloned().collect();
        let outcomes = futures::future::join_all(checks.iter().map(|check| {
            let skip = unmatched.remove(check.name());
            async move {
                if skip {
                    CheckOutcome::Excluded
                } else {
                    match check.check().await {
                        Ok(()) => CheckOutcome::Passed,
                        Err(reason) => CheckOutcome::Failed(reason),
                    }
                }
            }
        }))
        .await;
        HealthReport {
            endpoint: endpoint.to_string(),
            results: checks
                .iter()
                .zip(outcomes)
                .map(|(check, outcome)| CheckResult {
                    name: check.name().to_string(),
                    outcome,
                })
                .collect(),
            unmatched_excludes: unmatched.into_iter().collect(),
        }
    }
}

/// How one check of a report ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// It passed.
    Passed,
    /// It was not run (`?exclude=<name>`); counts as passed.
    Excluded,
    /// It failed, for this reason.
    Failed(String),
}

/// One check's line of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// How it ended.
    pub outcome: CheckOutcome,
}

/// What running a [`HealthChecks`] list found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The endpoint's name, e.g. `readyz`.
    pub endpoint: String,
    /// Each check, in order.
    pub results: Vec<CheckResult>,
    /// Names asked to be excluded that match no check, sorted.
    pub unmatched_excludes: Vec<String>,
}

impl HealthReport {
    /// Whether every check passed or was excluded.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed checks' names and reasons, in order.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.results.iter().filter_map(|r| match &r.outcome {
            CheckOutcome::Failed(reason) => Some((r.name.as_str(), reason.as_str())),
            _ => None,
        })
    }

    /// The body kube-apiserver answers: on success `ok`, or with `verbose` one line per check
    /// ending with `<endpoint> check passed`; on failure always the lines (reasons withheld),
    /// ending with `<endpoint> check failed`.
    pub fn render(&self, verbose: bool) -> String {
        let passed = self.passed();
        if passed && !verbose {
            return "ok".to_string();
        }
        let mut out = String::new();
        for result in &self.results {
            match &result.outcome {
                CheckOutcome::Passed => out.push_str(&format!("[+]{} ok\n", result.name)),
                CheckOutcome::Excluded => {
                    out.push_str(&format!("[+]{} excluded: ok\n", result.name))
                }
                CheckOutcome::Failed(_) => {
                    out.push_str(&format!("[-]{} failed: reason withheld\n", result.name))
                }
            }
        }
        if !self.unmatched_excludes.is_empty() {
            let quoted: Vec<String> = self
                .unmatched_excludes
                .iter()
                .map(|name| format!("{name:?}"))
                .collect();
            out.push_str(&format!(
                "warn: some health checks cannot be excluded: no matches for {}\n",
                quoted.join(",")
            ));
        }
        if passed {
            out.push_str(&format!("{} check passed\n", self.endpoint));
        } else {
            out.push_str(&format!("{} check failed\n", self.endpoint));
        }
        out
    }

    /// The verbose report with the failures' reasons, for logs.
    pub fn reasons(&self) -> String {
        self.failures()
            .map(|(name, reason)| format!("[-]{name} failed: {reason}\n"))
            .collect()
    }
}

/// What one check's own path (`/readyz/<name>`) answers: `ok`, or
/// `internal server error: <reason>` followed by a newline.
pub fn render_single(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(reason) => format!("internal server error: {reason}\n"),
    }
}

/// The three endpoints of a component, each with its checks; every list starts with
/// [`Ping`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HealthEndpoints {
    /// `/healthz`: the deprecated aggregate Kubernetes still serves.
    pub healthz: HealthChecks,
    /// `/livez`: whether the process should be restarted.
    pub livez: HealthChecks,
    /// `/readyz`: whether it should get traffic (or, for a controller, is doing its job).
    pub readyz: HealthChecks,
}

impl Default for HealthEndpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthEndpoints {
    /// The names of the endpoints, as served.
    pub const NAMES: [&'static str; 3] = ["healthz", "livez", "readyz"];

    /// Each endpoint with [`Ping`] alone.
    pub fn new() -> Self {
        let ping = HealthChecks::new().with(Ping);
        HealthEndpoints {
            healthz: ping.clone(),
            livez: ping.clone(),
            readyz: ping,
        }
    }

    /// Adds `check` to `/healthz`.
    #[must_use]
    pub fn healthz(mut self, check: impl HealthCheck) -> Self {
        self.healthz.push(Arc::new(check));
        self
    }

    /// Adds `check` to `/livez` (and `/healthz`, which aggregates it, as in Kubernetes).
    #[must_use]
    pub fn livez(mut self, check: impl HealthCheck) -> Self {
        let check: Arc<dyn HealthCheck> = Arc::new(check);
        self.livez.push(check.clone());
        self.healthz.push(check);
        self
    }

    /// Adds `check` to `/readyz` (and `/healthz`).
    #[must_use]
    pub fn readyz(mut self, check: impl HealthCheck) -> Self {
        let check: Arc<dyn HealthCheck> = Arc::new(check);
        self.readyz.push(check.clone());
        self.healthz.push(check);
        self
    }

    /// The list of the endpoint named `name` (`healthz`, `livez` or `readyz`).
    pub fn endpoint(&self, name: &str) -> Option<&HealthChecks> {
        match name {
            "healthz" => Some(&self.healthz),
            "livez" => Some(&self.livez),
            "readyz" => Some(&self.readyz),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> HealthEndpoints {
        HealthEndpoints::new()
            .readyz(check_fn("etcd", || Err("connection refused".into())))
            .readyz(check_fn("informer-sync", || Ok(())))
    }

    fn run(checks: &HealthChecks, endpoint: &str, excluded: &[&str]) -> HealthReport {
        let excluded: Vec<String> = excluded.iter().map(|s| s.to_string()).collect();
        futures::executor::block_on(checks.run(endpoint, &excluded))
    }

    #[test]
    fn a_passing_endpoint_says_ok_or_lists_every_check_when_verbose() {
        let endpoints = HealthEndpoints::new().livez(check_fn("log", || Ok(())));
        let report = run(&endpoints.livez, "livez", &[]);
        assert!(report.passed());
        assert_eq!(report.render(false), "ok");
        assert_eq!(
            report.render(true),
            "[+]ping ok\n[+]log ok\nlivez check passed\n"
        );
    }

    #[test]
    fn a_failing_check_withholds_its_reason_and_fails_the_endpoint_even_without_verbose() {
        let report = run(&endpoints().readyz, "readyz", &[]);
        assert!(!report.passed());
        let expected = "[+]ping ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\nreadyz check failed\n";
        assert_eq!(report.render(false), expected);
        assert_eq!(report.render(true), expected);
        assert_eq!(report.reasons(), "[-]etcd failed: connection refused\n");
        assert_eq!(
            report.failures().collect::<Vec<_>>(),
            [("etcd", "connection refused")]
        );
    }

    #[test]
    fn excluded_checks_count_as_passed_and_unknown_exclusions_are_warned_about() {
        let report = run(&endpoints().readyz, "readyz", &["etcd", "nope", "also-not"]);
        assert!(report.passed());
        assert_eq!(
            report.render(true),
            "[+]ping ok\n[+]etcd excluded: ok\n[+]informer-sync ok\n\
             warn: some health checks cannot be excluded: no matches for \"also-not\",\"nope\"\n\
             readyz check passed\n"
        );
    }

    #[test]
    fn checks_reach_healthz_too_and_keep_their_order_and_an_empty_list_pings() {
        let endpoints = endpoints().livez(check_fn("log", || Ok(())));
        assert_eq!(
            endpoints.healthz.names(),
            ["ping", "etcd", "informer-sync", "log"]
        );
        assert_eq!(endpoints.livez.names(), ["ping", "log"]);
        assert_eq!(endpoints.readyz.names(), ["ping", "etcd", "informer-sync"]);
        let empty = run(&HealthChecks::new(), "healthz", &[]);
        assert_eq!(empty.render(true), "[+]ping ok\nhealthz check passed\n");
        assert!(endpoints.endpoint("readyz").is_some());
        assert!(endpoints.endpoint("metrics").is_none());
    }

    #[test]
    fn a_check_added_twice_is_replaced_in_place() {
        let checks = HealthChecks::new()
            .with(check_fn("a", || Err("old".into())))
            .with(check_fn("b", || Ok(())))
            .with(check_fn("a", || Ok(())));
        assert_eq!(checks.names(), ["a", "b"]);
        assert!(run(&checks, "readyz", &[]).passed());
    }

    #[test]
    fn a_single_check_answers_ok_or_its_reason() {
        assert_eq!(render_single(&Ok(())), "ok");
        assert_eq!(
            render_single(&Err("etcd down".into())),
            "internal server error: etcd down\n"
        );
    }
}
