//! The tower layer (feature `tower`): see the
//! [module documentation](crate::middleware).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;

use super::{
    DURATION_METRIC, Outcome, REQUESTS_METRIC, RequestAttributes, method_label, record_status,
    request_span,
};
use crate::batch::MetricBatch;
use crate::telemetry::Telemetry;
use crate::trace_context::TraceContext;
use crate::tracing_layer::with_remote_parent;

/// A route function: the route template of a request, from its head.
type RouteFn = dyn Fn(&http::request::Parts) -> Option<Cow<'static, str>> + Send + Sync;

/// What every clone of a layer and its services share.
struct Config {
    metrics: Arc<MetricBatch>,
    route: Option<Arc<RouteFn>>,
    status_classes: bool,
}

/// Instruments every request of the service it wraps: a span continuing the
/// incoming trace, a count and a duration distribution. See the
/// [module documentation](crate::middleware).
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
    /// ([`Telemetry::tracing_layer`]). With telemetry
    /// [disabled](crate::TelemetryBuilder::enabled), it passes requests
    /// through: no span, no route lookup, nothing recorded.
    ///
    /// ```
    /// use axum::{Router, body::Body, http::Request, routing::get};
    /// use newrelic_telemetry::middleware::HttpServerLayer;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// for enabled in [true, false] {
    ///     let telemetry = server.telemetry_builder().enabled(enabled).build()?;
    ///     let mut app = Router::new()
    ///         .route("/", get(|| async { "ok" }))
    ///         .layer(HttpServerLayer::new(&telemetry));
    ///     std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut app, cx)).await?;
    ///     let response = app.call(Request::get("/").body(Body::empty())?).await?;
    ///     assert!(response.status().is_success());
    ///     // A count and a duration when on; nothing when off.
    ///     assert_eq!(telemetry.metrics().series_count(), if enabled { 2 } else { 0 });
    ///     telemetry.shutdown().await;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn new(telemetry: &Telemetry) -> Self {
        HttpServerLayer::with_metrics(telemetry.metrics().clone())
    }

    /// A layer recording into `metrics` (for batches and harvesters
    /// assembled by hand).
    ///
    /// ```
    /// use axum::{Router, body::Body, http::Request, routing::get};
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::{HttpServerLayer, REQUESTS_METRIC};
    /// use std::sync::Arc;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let metrics = Arc::new(MetricBatch::new());
    /// let mut service = Router::new()
    ///     .route("/orders/{id}", get(|| async { "an order" }))
    ///     .layer(HttpServerLayer::with_metrics(metrics.clone()));
    /// # const PATH: &str = "/orders/7";
    /// std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut service, cx)).await.unwrap();
    /// let request = Request::get(PATH).body(Body::empty()).unwrap();
    /// let status = service.call(request).await.unwrap().status();
    /// let (recorded, _) = metrics.flush().await;
    /// let requests = recorded.iter().find(|m| m.name() == REQUESTS_METRIC).unwrap();
    /// assert!(status.is_success());
    /// assert_eq!(requests.attributes().get("http.route"), Some(&"/orders/{id}".into()));
    /// # }
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
    /// use axum::{Router, body::Body, http::Request, routing::get};
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::{HttpServerLayer, REQUESTS_METRIC};
    /// use std::sync::Arc;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let metrics = Arc::new(MetricBatch::new());
    /// let mut service = Router::new().route("/api/{*rest}", get(|| async { "ok" })).layer(
    ///     HttpServerLayer::with_metrics(metrics.clone())
    ///         .route_with(|request| request.uri.path().starts_with("/api/").then(|| "/api/*".into())),
    /// );
    /// # const PATH: &str = "/api/users/7";
    /// std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut service, cx)).await.unwrap();
    /// let request = Request::get(PATH).body(Body::empty()).unwrap();
    /// let status = service.call(request).await.unwrap().status();
    /// let (recorded, _) = metrics.flush().await;
    /// let requests = recorded.iter().find(|m| m.name() == REQUESTS_METRIC).unwrap();
    /// assert!(status.is_success());
    /// assert_eq!(requests.attributes().get("http.route"), Some(&"/api/*".into()));
    /// # }
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
    /// use axum::{Router, body::Body, http::Request, routing::get};
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::{HttpServerLayer, REQUESTS_METRIC};
    /// use std::sync::Arc;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let metrics = Arc::new(MetricBatch::new());
    /// let mut service = Router::new()
    ///     .route("/orders/{id}", get(|| async { "an order" }))
    ///     .layer(HttpServerLayer::with_metrics(metrics.clone()).status_classes(true));
    /// # const PATH: &str = "/nowhere";
    /// std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut service, cx)).await.unwrap();
    /// let request = Request::get(PATH).body(Body::empty()).unwrap();
    /// let status = service.call(request).await.unwrap().status();
    /// let (recorded, _) = metrics.flush().await;
    /// let requests = recorded.iter().find(|m| m.name() == REQUESTS_METRIC).unwrap();
    /// assert_eq!(status, 404);
    /// assert_eq!(requests.attributes().get("http.response.status_class"), Some(&"4xx".into()));
    /// assert_eq!(requests.attributes().get("http.response.status_code"), None);
    /// # }
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
        let method = method_label(parts.method.as_str());
        // A disabled `Telemetry`: no span, no route, nothing recorded.
        let off = self.config.metrics.is_off();
        let (route, span) = if off {
            (None, tracing::Span::none())
        } else {
            let route = self.config.route(&parts);
            let remote = TraceContext::extract(&parts.headers);
            let span = with_remote_parent(remote.as_ref(), || {
                request_span(method, route.as_ref().map(Route::as_str), parts.uri.path())
            });
            (route, span)
        };
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
                counted: off,
                timed: off,
                waiting: None,
            },
            result: None,
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
    /// The rest of the recording once a new series had to wait for its
    /// shard's lock: owned and kept, so that the lock's wake-up reaches
    /// this task (a future dropped while waiting would lose it).
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Recording {
    /// Records the count and the duration. A recording into an existing
    /// series is done at its first poll; one that creates a series may wait
    /// for its shard's lock, and its future is then dropped before it
    /// recorded anything and made again at the next poll, so nothing is
    /// counted twice and nothing is allocated.
    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waiting) = &mut self.waiting {
            ready!(waiting.as_mut().poll(cx));
            (self.waiting, self.counted, self.timed) = (None, true, true);
            return Poll::Ready(());
        }
        let Some((outcome, elapsed_ms)) = self.outcome else {
            return Poll::Ready(());
        };
        let stalled = {
            let attributes = RequestAttributes {
                method: self.method,
                route: self.route.as_ref().map(Route::as_str),
                outcome,
                status_classes: self.config.status_classes,
            };
            let metrics = &self.config.metrics;
            // A refusal is counted by the batch; it never fails a request.
            let mut stalled = false;
            if !self.counted {
                let count = pin!(metrics.record_count(REQUESTS_METRIC, 1, &attributes));
                stalled = count.poll(cx).is_pending();
                self.counted = !stalled;
            }
            if !stalled && !self.timed {
                let time = pin!(metrics.record_histogram(DURATION_METRIC, elapsed_ms, &attributes));
                stalled = time.poll(cx).is_pending();
                self.timed = !stalled;
            }
            stalled
        };
        if stalled {
            return self.wait_owned(cx, outcome, elapsed_ms);
        }
        Poll::Ready(())
    }

    /// The rare path: a recording made a new series and its shard's lock
    /// was busy. The borrowed attempt was dropped before it recorded
    /// anything; what is left is recorded by a future that owns its parts
    /// and stays registered for the lock's wake-up.
    fn wait_owned(&mut self, cx: &mut Context<'_>, outcome: Outcome, elapsed_ms: f64) -> Poll<()> {
        let metrics = self.config.metrics.clone();
        let (method, status_classes, counted) =
            (self.method, self.config.status_classes, self.counted);
        let route = self.route.as_ref().map(|r| r.as_str().to_owned());
        self.waiting = Some(Box::pin(async move {
            let attributes = RequestAttributes {
                method,
                route: route.as_deref(),
                outcome,
                status_classes,
            };
            if !counted {
                metrics.record_count(REQUESTS_METRIC, 1, &attributes).await;
            }
            metrics
                .record_histogram(DURATION_METRIC, elapsed_ms, &attributes)
                .await;
        }));
        self.poll_record(cx)
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
                Ok(response) => record_status(this.span, response.status().as_u16()),
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
