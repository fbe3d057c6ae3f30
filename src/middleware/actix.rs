//! The actix-web middleware (feature `actix-web`): see the
//! [module documentation](crate::middleware).

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures::future::LocalBoxFuture;

use super::{
    DURATION_METRIC, REQUESTS_METRIC, RequestAttributes, method_label, record_status, request_span,
};
use crate::batch::MetricBatch;
use crate::telemetry::Telemetry;
use crate::trace_context::TraceContext;
use crate::tracing_layer::with_remote_parent;

/// What every clone of the middleware and its services share.
struct Config {
    metrics: Arc<MetricBatch>,
    status_classes: bool,
}

/// Instruments every request of an actix-web 4 app, scope or resource it
/// wraps (`App::wrap`): a span continuing the incoming trace, a count and a
/// duration distribution by route pattern, as [`HttpServerLayer`] does for tower
/// services. See the [module documentation](crate::middleware).
///
/// The route is the pattern of the resource the request's path matches
/// (`HttpRequest::match_pattern`: `/orders/{id}`, with its scopes'
/// prefixes), never the raw path; a request that matches no resource (the
/// default service's 404) has no route. An error returned through the
/// middleware (by a middleware inside it: a handler's error is a response
/// already) is recorded with the status of the response actix-web makes of
/// it (`ResponseError::status_code`), so that a request reads the same
/// whichever part of the app refused it.
///
/// Each actix-web worker runs on its own single-threaded runtime: the
/// middleware is `Send` and cloned into every worker's app, the request
/// futures stay on their worker, and every worker records into the one
/// metric batch (lock-free into series that exist). Spans are exported by
/// the process's tracing subscriber: install it globally (`.init()`), so
/// that every worker thread has it.
///
#[cfg_attr(
    feature = "tower",
    doc = "[`HttpServerLayer`]: crate::middleware::HttpServerLayer"
)]
#[cfg_attr(
    not(feature = "tower"),
    doc = "[`HttpServerLayer`]: https://docs.rs/newrelic-telemetry/latest/newrelic_telemetry/middleware/struct.HttpServerLayer.html"
)]
///
/// ```
/// use actix_web::{App, HttpResponse, HttpServer, web};
/// use newrelic_telemetry::middleware::ActixMiddleware;
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// actix_web::rt::System::new().block_on(async {
///     let ingest = TestIngestServer::start().await?;
///     let telemetry = ingest.telemetry_builder().build()?;
///     let middleware = ActixMiddleware::new(&telemetry).status_classes(true);
///     let server = HttpServer::new(move || {
///         App::new()
///             .wrap(middleware.clone())
///             .route("/users/{id}", web::get().to(|| async { HttpResponse::Ok().finish() }))
///     })
///     .workers(2)
///     .disable_signals()
///     .bind(("127.0.0.1", 0))?;
///     let url = format!("http://{}/users/7", server.addrs()[0]);
///     let server = server.run();
///     let handle = server.handle();
///     let serving = actix_web::rt::spawn(server);
///
///     let http = newrelic_telemetry::client::http_client_builder().no_proxy().build()?;
///     assert!(http.get(&url).send().await?.status().is_success());
///     drop(http); // its idle connection would hold up a graceful stop
///     handle.stop(true).await;
///     serving.await??;
///     telemetry.shutdown().await;
///
///     let count = ingest.metrics().into_iter().find(|m| m["name"] == "http.server.requests").unwrap();
///     assert_eq!(count["attributes"]["http.route"], "/users/{id}");
///     assert_eq!(count["attributes"]["http.response.status_class"], "2xx");
///     assert_eq!(count["value"], 1.0);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a middleware does nothing until it wraps an app (`App::wrap`)"]
pub struct ActixMiddleware {
    config: Arc<Config>,
}

impl fmt::Debug for ActixMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActixMiddleware")
            .field("status_classes", &self.config.status_classes)
            .finish_non_exhaustive()
    }
}

impl ActixMiddleware {
    /// A middleware recording into `telemetry`'s metric batch. Its spans
    /// are exported by the subscriber's tracing layer
    /// ([`Telemetry::tracing_layer`]).
    ///
    /// ```
    /// use actix_web::{App, HttpResponse, web};
    /// use newrelic_telemetry::middleware::ActixMiddleware;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// let middleware = ActixMiddleware::new(&telemetry);
    /// // Cloned into each worker's app by `HttpServer::new`'s factory.
    /// let app = App::new()
    ///     .wrap(middleware.clone())
    ///     .route("/", web::get().to(|| async { HttpResponse::Ok().finish() }));
    /// # Ok(()) }
    /// ```
    pub fn new(telemetry: &Telemetry) -> Self {
        ActixMiddleware::with_metrics(telemetry.metrics().clone())
    }

    /// A middleware recording into `metrics` (for batches and harvesters
    /// assembled by hand).
    ///
    /// ```
    /// use actix_web::{App, test, web};
    /// use newrelic_telemetry::middleware::ActixMiddleware;
    /// use newrelic_telemetry::{Metric, MetricBatch};
    /// use std::sync::Arc;
    ///
    /// actix_web::rt::System::new().block_on(async {
    ///     let metrics = Arc::new(MetricBatch::new());
    ///     let app = test::init_service(
    ///         App::new()
    ///             .wrap(ActixMiddleware::with_metrics(metrics.clone()))
    ///             .route("/orders/{id}", web::post().to(|| async { "placed" })),
    ///     )
    ///     .await;
    ///     for id in [1, 2] {
    ///         let request = test::TestRequest::post().uri(&format!("/orders/{id}")).to_request();
    ///         test::call_service(&app, request).await;
    ///     }
    ///     let (batch, _) = metrics.flush().await;
    ///     let counts: Vec<_> = batch.iter().filter_map(|m| match m {
    ///         Metric::Count(count) => Some(count.value()),
    ///         _ => None,
    ///     }).collect();
    ///     assert_eq!(counts, [2.0]); // two paths, one route: one series
    /// });
    /// ```
    pub fn with_metrics(metrics: Arc<MetricBatch>) -> Self {
        ActixMiddleware {
            config: Arc::new(Config {
                metrics,
                status_classes: false,
            }),
        }
    }

    /// Records the status class (`http.response.status_class`: `1xx` to
    /// `5xx`) in the metrics instead of the code, for fewer series. Spans
    /// always carry the code.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    /// use newrelic_telemetry::middleware::ActixMiddleware;
    /// use std::sync::Arc;
    ///
    /// let middleware = ActixMiddleware::with_metrics(Arc::new(MetricBatch::new())).status_classes(true);
    /// assert!(format!("{middleware:?}").contains("status_classes: true"));
    /// ```
    pub fn status_classes(self, enabled: bool) -> Self {
        ActixMiddleware {
            config: Arc::new(Config {
                metrics: self.config.metrics.clone(),
                status_classes: enabled,
            }),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for ActixMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ActixMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ActixMiddlewareService {
            inner: service,
            config: self.config.clone(),
        }))
    }
}

/// The service [`ActixMiddleware`] wraps around an app's, one per worker.
pub struct ActixMiddlewareService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> fmt::Debug for ActixMiddlewareService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActixMiddlewareService")
            .field("status_classes", &self.config.status_classes)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for ActixMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<B>, actix_web::Error>>;

    forward_ready!(inner);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        // A disabled `Telemetry`: no span, no route, nothing recorded.
        if self.config.metrics.is_off() {
            return Box::pin(self.inner.call(request));
        }
        let started = Instant::now();
        let method = method_label(request.method().as_str());
        let route = request.match_pattern();
        let remote = TraceContext::extract_from(request.headers());
        let span = with_remote_parent(remote.as_ref(), || {
            request_span(method, route.as_deref(), request.path())
        });
        let response = span.in_scope(|| self.inner.call(request));
        let config = self.config.clone();
        Box::pin(async move {
            let result = {
                let mut response = pin!(response);
                std::future::poll_fn(|cx| {
                    let _entered = span.enter();
                    response.as_mut().poll(cx)
                })
                .await
            };
            let code = match &result {
                Ok(response) => response.status().as_u16(),
                // What actix-web answers with (`Response::from(error)`).
                Err(error) => error.as_response_error().status_code().as_u16(),
            };
            let outcome = record_status(&span, code);
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let attributes = RequestAttributes {
                method,
                route: route.as_deref(),
                outcome,
                status_classes: config.status_classes,
            };
            // A refusal is counted by the batch; it never fails a request.
            config
                .metrics
                .record_count(REQUESTS_METRIC, 1, &attributes)
                .await;
            config
                .metrics
                .record_histogram(DURATION_METRIC, elapsed_ms, &attributes)
                .await;
            result
        })
    }
}
