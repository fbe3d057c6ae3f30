//! HTTP server middleware (feature `tower`): a [`tower_layer::Layer`] that
//! instruments every request of an axum, hyper or other `tower` service.
//!
//! Per request, [`HttpServerLayer`]
//! * opens a root `tracing` span (target [`SPAN_TARGET`], level INFO) that
//!   continues the trace of the request's `traceparent` header (a missing,
//!   malformed or unsupported one starts a new trace; see
//!   [`trace_context`](crate::trace_context)), named `{method} {route}`,
//!   with `span.kind: server`, `http.request.method`, `http.route`,
//!   `url.path` and, once the response is ready,
//!   `http.response.status_code`; a 5xx response (or an error from the
//!   service) flags it as an error (`error: true`). The handler runs inside
//!   it, so the handler's spans are its children and its logs carry its
//!   `trace.id`. The layer of
//!   [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) exports
//!   it, or counts it unsampled;
//! * counts the request in [`REQUESTS_METRIC`] and adds its duration (until
//!   the response's head is ready) to the [`DURATION_METRIC`] summary, in
//!   milliseconds, both by `http.request.method`, `http.route` and
//!   `http.response.status_code` (or `http.response.status_class`, `2xx`
//!   ..., with [`HttpServerLayer::status_classes`]).
//!
//! The route is a template, never the raw path, so that `/users/7` and
//! `/users/8` are one series: axum's [`MatchedPath`] with the `axum` feature,
//! or what the function given to [`HttpServerLayer::route_with`] returns.
//! A request with no known route (a 404 from axum's fallback, say) has no
//! `http.route`. Methods other than the nine standard ones count as
//! `_OTHER`: a client cannot make new series by inventing methods.
//!
//! The span is created inside
//! [`with_remote_parent`], so the
//! sampling decision is made when it is created: an unsampled request
//! costs a span with no attributes and two metric updates.
//!
//! [`MatchedPath`]: https://docs.rs/axum/0.8/axum/extract/struct.MatchedPath.html
//!
//! ```
//! use axum::{Router, routing::get};
//! use newrelic_telemetry::middleware::HttpServerLayer;
//! use newrelic_telemetry::test_util::TestIngestServer;
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestIngestServer::start().await?;
//! let telemetry = server.telemetry_builder().service_name("orders").build()?;
//! // In a service: `.init()`, once, in `main`.
//! let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(telemetry.tracing_layer()));
//!
//! let app = Router::new()
//!     .route("/orders/{id}", get(|| async { "an order" }))
//!     .layer(HttpServerLayer::new(&telemetry));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}/orders/7", listener.local_addr()?);
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! // The SDK's reqwest setup: with the default `rustls` feature a plain
//! // `reqwest::Client::new()` has no crypto provider.
//! let http = newrelic_telemetry::client::http_client_builder()?.build()?;
//! let response = http
//!     .get(&url)
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .send()
//!     .await?;
//! assert!(response.status().is_success());
//! telemetry.shutdown().await;
//!
//! let span = &server.spans()[0];
//! assert_eq!(span["trace.id"], "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(span["attributes"]["parent.id"], "00f067aa0ba902b7");
//! assert_eq!(span["attributes"]["name"], "GET /orders/{id}");
//! let requests = server.metrics().into_iter().find(|m| m["name"] == "http.server.requests").unwrap();
//! assert_eq!(requests["attributes"]["http.route"], "/orders/{id}");
//! assert_eq!(requests["attributes"]["http.response.status_code"], 200);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Method, Request, Response};
use pin_project_lite::pin_project;

use crate::attributes::{AsAttributes, ValueRef};
use crate::batch::MetricBatch;
use crate::telemetry::Telemetry;
use crate::trace_context::TraceContext;
use crate::tracing_layer::with_remote_parent;

/// The target of the middleware's request spans. It is not a module of
/// this crate, whose own targets the tracing layer never exports; a
/// per-layer filter by target must let it through for request spans to be
/// exported.
pub const SPAN_TARGET: &str = "http_server";

/// The count of requests, by method, route and status.
pub const REQUESTS_METRIC: &str = "http.server.requests";

/// The summary of request durations in milliseconds (from the request's
/// arrival to its response's head), by method, route and status.
pub const DURATION_METRIC: &str = "http.server.duration.ms";

/// A route function: the route template of a request, from its head.
type RouteFn = dyn Fn(&http::request::Parts) -> Option<Cow<'static, str>> + Send + Sync;

/// What every clone of a layer and its services share.
struct Config {
    metrics: Arc<MetricBatch>,
    route: Option<Arc<RouteFn>>,
    status_classes: bool,
}

/// Instruments every request of the service it wraps: a span continuing the
/// incoming trace, a count and a duration summary. See the
/// [module documentation](self).
///
/// ```
/// use newrelic_telemetry::middleware::HttpServerLayer;
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// # let telemetry = server.telemetry_builder().build()?;
/// // A hyper or tower service with its own router: name the routes.
/// let layer = HttpServerLayer::new(&telemetry)
///     .route_with(|request| match request.uri.path() {
///         "/" => Some("/".into()),
///         path if path.starts_with("/users/") => Some("/users/{id}".into()),
///         _ => None,
///     })
///     .status_classes(true);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct HttpServerLayer {
    config: Arc<Config>,
}

impl fmt::Debug for HttpServerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServerLayer")
            .field("route_with", &self.config.route.is_some())
            .field("status_classes", &self.config.status_classes)
            .finish_non_exhaustive()
    }
}

impl HttpServerLayer {
    /// A layer recording into `telemetry`'s metric batch. Its spans are
    /// exported by the subscriber's tracing layer
    /// ([`Telemetry::tracing_layer`]).
    ///
    /// ```
    /// use newrelic_telemetry::middleware::HttpServerLayer;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// let app = axum::Router::<()>::new()
    ///     .route("/", axum::routing::get(|| async { "ok" }))
    ///     .layer(HttpServerLayer::new(&telemetry));
    /// # Ok(()) }
    /// ```
    pub fn new(telemetry: &Telemetry) -> Self {
        HttpServerLayer::with_metrics(telemetry.metrics().clone())
    }

    /// A layer recording into `metrics` (for batches and harvesters
    /// assembled by hand).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::HttpServerLayer;
    /// use std::sync::Arc;
    ///
    /// let layer = HttpServerLayer::with_metrics(Arc::new(MetricBatch::new()));
    /// ```
    pub fn with_metrics(metrics: Arc<MetricBatch>) -> Self {
        HttpServerLayer {
            config: Arc::new(Config {
                metrics,
                route: None,
                status_classes: false,
            }),
        }
    }

    /// Names each request's route with `route`, from the request's head (its
    /// method, URI, headers and extensions), instead of axum's
    /// `MatchedPath`. Return a template (`/users/{id}`), never the raw
    /// path, or `None` when no route matches.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::HttpServerLayer;
    /// use std::sync::Arc;
    ///
    /// let layer = HttpServerLayer::with_metrics(Arc::new(MetricBatch::new()))
    ///     .route_with(|request| request.uri.path().starts_with("/api/").then(|| "/api/*".into()));
    /// ```
    pub fn route_with(
        self,
        route: impl Fn(&http::request::Parts) -> Option<Cow<'static, str>> + Send + Sync + 'static,
    ) -> Self {
        self.change(|c| c.route = Some(Arc::new(route)))
    }

    /// Records the status class (`http.response.status_class`: `1xx` to
    /// `5xx`) in the metrics instead of the code, for fewer series. Spans
    /// always carry the code.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::HttpServerLayer;
    /// use std::sync::Arc;
    ///
    /// let layer = HttpServerLayer::with_metrics(Arc::new(MetricBatch::new())).status_classes(true);
    /// ```
    pub fn status_classes(self, enabled: bool) -> Self {
        self.change(|c| c.status_classes = enabled)
    }

    fn change(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = match Arc::try_unwrap(self.config) {
            Ok(config) => config,
            Err(shared) => Config {
                metrics: shared.metrics.clone(),
                route: shared.route.clone(),
                status_classes: shared.status_classes,
            },
        };
        f(&mut config);
        HttpServerLayer {
            config: Arc::new(config),
        }
    }
}

impl<S> tower_layer::Layer<S> for HttpServerLayer {
    type Service = HttpServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpServerService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service [`HttpServerLayer`] wraps around yours.
#[derive(Clone)]
pub struct HttpServerService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for HttpServerService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServerService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A method as a metric attribute: the standard ones by name, any other as
/// `_OTHER` (a client must not be able to make series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// A request's route template.
enum Route {
    Named(Cow<'static, str>),
    #[cfg(feature = "axum")]
    Matched(axum::extract::MatchedPath),
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Named(route) => route,
            #[cfg(feature = "axum")]
            Route::Matched(path) => path.as_str(),
        }
    }
}

impl Config {
    fn route(&self, parts: &http::request::Parts) -> Option<Route> {
        if let Some(route) = &self.route {
            return route(parts).map(Route::Named);
        }
        #[cfg(feature = "axum")]
        if let Some(path) = parts.extensions.get::<axum::extract::MatchedPath>() {
            return Some(Route::Matched(path.clone()));
        }
        None
    }
}

/// The request span: named `{method} {route}` (`otel.name`), the route
/// and status fields filled when known.
fn request_span(method: &'static str, route: Option<&str>, path: &str) -> tracing::Span {
    match route {
        Some(route) => tracing::info_span!(
            target: SPAN_TARGET,
            parent: None,
            "http.server",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            url.path = path,
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        ),
        None => tracing::info_span!(
            target: SPAN_TARGET,
            parent: None,
            "http.server",
            otel.name = method,
            otel.kind = "server",
            http.request.method = method,
            url.path = path,
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        ),
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for HttpServerService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let method = method_label(&parts.method);
        let route = self.config.route(&parts);
        let remote = TraceContext::extract(&parts.headers);
        let span = with_remote_parent(remote.as_ref(), || {
            request_span(method, route.as_ref().map(Route::as_str), parts.uri.path())
        });
        let request = Request::from_parts(parts, body);
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            inner,
            span,
            recording: Recording {
                config: self.config.clone(),
                started,
                method,
                route,
                outcome: None,
                counted: false,
                timed: false,
            },
            result: None,
        }
    }
}

/// How a request ended, as the metrics record it.
#[derive(Clone, Copy)]
enum Outcome {
    Status(u16),
    Error,
}

/// The metric attributes of a request, borrowed (no allocation once the
/// series exists).
struct RequestAttributes<'a> {
    method: &'static str,
    route: Option<&'a str>,
    outcome: Outcome,
    status_classes: bool,
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl AsAttributes for RequestAttributes<'_> {
    fn attribute_count(&self) -> usize {
        2 + usize::from(self.route.is_some())
    }

    fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
        f("http.request.method", ValueRef::Str(self.method));
        if let Some(route) = self.route {
            f("http.route", ValueRef::Str(route));
        }
        match self.outcome {
            Outcome::Status(code) if self.status_classes => {
                let class = match code {
                    100..=599 => STATUS_CLASSES[usize::from(code / 100) - 1],
                    _ => STATUS_CLASSES[5],
                };
                f("http.response.status_class", ValueRef::Str(class));
            }
            Outcome::Status(code) => f("http.response.status_code", ValueRef::Int(i64::from(code))),
            Outcome::Error => f("error", ValueRef::Bool(true)),
        }
    }
}

/// What the response future records once the response is ready.
struct Recording {
    config: Arc<Config>,
    started: Instant,
    method: &'static str,
    route: Option<Route>,
    /// Set when the inner future is ready, with the elapsed milliseconds.
    outcome: Option<(Outcome, f64)>,
    /// Whether the request was counted already.
    counted: bool,
    /// Whether its duration was recorded already.
    timed: bool,
}

impl Recording {
    /// Records the count and the duration. A recording into an existing
    /// series is done at its first poll; one that creates a series may wait
    /// for its shard's lock, and its future is then dropped before it
    /// recorded anything and made again at the next poll, so nothing is
    /// counted twice and nothing is allocated.
    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some((outcome, elapsed_ms)) = self.outcome else {
            return Poll::Ready(());
        };
        let attributes = RequestAttributes {
            method: self.method,
            route: self.route.as_ref().map(Route::as_str),
            outcome,
            status_classes: self.config.status_classes,
        };
        let metrics = &self.config.metrics;
        // A refusal is counted by the batch; it never fails a request.
        if !self.counted {
            let count = pin!(metrics.record_count(REQUESTS_METRIC, 1, &attributes));
            ready!(count.poll(cx));
            self.counted = true;
        }
        if !self.timed {
            let time = pin!(metrics.record_summary(DURATION_METRIC, elapsed_ms, &attributes));
            ready!(time.poll(cx));
            self.timed = true;
        }
        Poll::Ready(())
    }
}

pin_project! {
    /// The response future of [`HttpServerService`]: the inner service's,
    /// polled inside the request span, then the request recorded.
    pub struct ResponseFuture<F: Future> {
        #[pin]
        inner: F,
        span: tracing::Span,
        recording: Recording,
        // The inner future's output, held while the request is recorded.
        result: Option<F::Output>,
    }
}

impl<F: Future> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.recording.outcome.is_none() {
            let result = {
                let _entered = this.span.enter();
                ready!(this.inner.poll(cx))
            };
            let outcome = match &result {
                Ok(response) => {
                    let code = response.status().as_u16();
                    this.span.record("http.response.status_code", code);
                    if code >= 500 {
                        this.span.record("error", true);
                    }
                    Outcome::Status(code)
                }
                Err(_) => {
                    this.span.record("error", true);
                    Outcome::Error
                }
            };
            let elapsed_ms = this.recording.started.elapsed().as_secs_f64() * 1000.0;
            this.recording.outcome = Some((outcome, elapsed_ms));
            *this.result = Some(result);
        }
        ready!(this.recording.poll_record(cx));
        match this.result.take() {
            Some(result) => Poll::Ready(result),
            None => panic!("`ResponseFuture` polled after completion"),
        }
    }
}
