//! Limits: body size (413), concurrent requests (429) and request duration (504).
//!
//! Each refusal is a Kubernetes `Status`. Watches and other long-running requests (see
//! [`RequestInfo::is_long_running`]) are exempt from the in-flight limit and the timeout;
//! a watch is bounded by its own `timeoutSeconds`. Health probes (`/healthz`, `/livez`,
//! `/readyz`) are exempt from the in-flight limit, as Kubernetes' `exempt` priority level
//! serves them, so a flood never makes a server look dead.
//!
//! The in-flight limit runs after authentication: anonymous callers draw from a small budget
//! of their own ([`Limits::max_anonymous_in_flight`]), so they cannot take the slots of
//! authenticated users. The body is read only after authorization (see [`super`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use capstan_api::Error;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::{RequestInfo, UserInfo};
use crate::http::status::ApiError;

/// Kubernetes' default request body limit: 3 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// kube-apiserver's default `--max-requests-inflight`: 400.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 400;
/// kube-apiserver's default `--request-timeout`: 60 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// kube-apiserver's `ReadHeaderTimeout`: 32 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(32);
/// How many requests of anonymous callers may run at once (when anonymous requests are
/// allowed): 20, a twentieth of the default in-flight limit.
pub const DEFAULT_MAX_ANONYMOUS_IN_FLIGHT: usize = 20;

/// The API server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, in bytes; larger gets 413. Default: 3 MiB.
    pub max_body_bytes: usize,
    /// How many non-long-running requests may run at once; more get 429. Default: 400.
    pub max_in_flight: usize,
    /// How many non-long-running requests of anonymous callers (`system:anonymous`) may run
    /// at once, apart from `max_in_flight`; more get 429. Used only when anonymous requests
    /// are allowed. Default: 20.
    pub max_anonymous_in_flight: usize,
    /// How long a non-long-running request may run; longer gets 504. Default: 60 s.
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers before its connection is
    /// closed (the slowloris defence). Default: 32 s.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_anonymous_in_flight: DEFAULT_MAX_ANONYMOUS_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

fn refuse(error: Error) -> Response {
    ApiError(error).into_response()
}

// ---------------------------------------------------------------------------------------------
// Body limit

/// Refuses request bodies over a size with 413 `RequestEntityTooLarge`, by their
/// `Content-Length` or, for chunked bodies, by counting.
///
/// The body is read in full (up to the limit) before the request goes on, so nothing behind
/// this layer sees a partial or oversized body. [`ApiServerOptions::apply`](super::ApiServerOptions::apply)
/// puts it behind authentication, the in-flight limit and authorization, so nothing of an
/// unauthenticated or unauthorized caller's body is ever buffered. It also lifts axum's own 2 MB default
/// extractor limit to this one.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    max: usize,
}

impl BodyLimitLayer {
    /// Bodies over `max` bytes are refused.
    pub fn new(max: usize) -> Self {
        BodyLimitLayer { max }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            max: self.max,
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    max: usize,
}

fn too_large(max: usize) -> Response {
    refuse(Error::RequestEntityTooLarge {
        message: format!("the request body is larger than the limit of {max} bytes"),
    })
}

impl<S> Service<Request> for BodyLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut inner = super::take(&mut self.inner);
        let max = self.max;
        Box::pin(async move {
            let declared = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|length| length > max as u64) {
                return Ok(too_large(max));
            }
            let (parts, body) = request.into_parts();
            let mut chunks = body.into_data_stream();
            let mut buffer = Vec::new();
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(chunk) if buffer.len() + chunk.len() > max => return Ok(too_large(max)),
                    Ok(chunk) => buffer.extend_from_slice(&chunk),
                    Err(e) => {
                        return Ok(refuse(Error::bad_request(format!(
                            "reading the request body: {e}"
                        ))))
                    }
                }
            }
            let mut request = Request::from_parts(parts, Body::from(Bytes::from(buffer)));
            DefaultBodyLimit::max(max).apply(&mut request);
            inner.call(request).await
        })
    }
}

// ---------------------------------------------------------------------------------------------
// In-flight limit

/// Refuses requests beyond a number running at once with 429 `TooManyRequests` and
/// `Retry-After: 1`, like kube-apiserver's `--max-requests-inflight`. Long-running requests
/// (watches) and health probes neither count nor wait.
///
/// Placed behind [`AuthnLayer`](super::AuthnLayer), it sees each request's [`UserInfo`]; with
/// an [`anonymous`](Self::anonymous) budget, anonymous callers count against that budget
/// alone. The counts are shared by every service this layer makes (axum applies a layer once
/// per route), and by clones of the layer.
#[derive(Debug, Clone)]
pub struct InFlightLimitLayer {
    slots: Arc<Semaphore>,
    anonymous: Option<Arc<Semaphore>>,
}

impl InFlightLimitLayer {
    /// At most `max` requests at once.
    pub fn new(max: usize) -> Self {
        InFlightLimitLayer {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            anonymous: None,
        }
    }

    /// Anonymous callers get `max` requests at once of their own, and none of the others'.
    pub fn anonymous(mut self, max: usize) -> Self {
        self.anonymous = Some(Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))));
        self
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            slots: self.slots.clone(),
            anonymous: self.anonymous.clone(),
        }
    }
}

/// The service of [`InFlightLimitLayer`].
#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    slots: Arc<Semaphore>,
    anonymous: Option<Arc<Semaphore>>,
}

impl<S> Service<Request> for InFlightLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut inner = super::take(&mut self.inner);
        let path = request.uri().path();
        let is_probe = ["/healthz", "/livez", "/readyz"].iter().any(|probe| {
            path == *probe || path.strip_prefix(probe).is_some_and(|r| r.starts_with('/'))
        });
        if is_probe || RequestInfo::new(request.method(), request.uri()).is_long_running() {
            return Box::pin(inner.call(request));
        }
        let anonymous = request
            .extensions()
            .get::<UserInfo>()
            .is_some_and(UserInfo::is_anonymous);
        let slots = match &self.anonymous {
            Some(budget) if anonymous => budget,
            _ => &self.slots,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            return Box::pin(async {
                Ok(refuse(Error::TooManyRequests {
                    message: "Too many requests, please try again later.".into(),
                    retry_after_seconds: Some(1),
                }))
            });
        };
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(permit);
            response
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Timeout

/// Answers a request that has not produced its response in time with 504 `Timeout`, and drops
/// its handler. Long-running requests (watches) are exempt.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Requests get `timeout` to answer.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut inner = super::take(&mut self.inner);
        if RequestInfo::new(request.method(), request.uri()).is_long_running() {
            return Box::pin(inner.call(request));
        }
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, inner.call(request)).await {
                Ok(response) => response,
                Err(_) => Ok(refuse(Error::Timeout {
                    message: format!(
                        "request did not complete within the allotted timeout of {timeout:?}"
                    ),
                })),
            }
        })
    }
}
