//! HTTP server middleware: [`HttpServerLayer`] (feature `tower`), a
//! [`tower_layer::Layer`][Layer] for axum, hyper, tonic or any other `tower`
//! service, and [`ActixMiddleware`] (feature `actix-web`), for actix-web 4's
//! `App::wrap`. Both instrument every request the same way.
//!
//! Per request, the middleware
//! * opens a root `tracing` span (target [`SPAN_TARGET`], level INFO) that
//!   continues the trace of the request's `traceparent` header (a missing,
//!   malformed or unsupported one starts a new trace; see
//!   [`trace_context`](crate::trace_context)), named `{method} {route}`,
//!   with `span.kind: server`, `http.request.method`, `http.route`,
//!   `url.path` and, once the response is ready,
//!   `http.response.status_code`; a 5xx response (or, with tower, an error
//!   from the service) flags it as an error (`error: true`). The handler
//!   runs inside it, so the handler's spans are its children and its logs
//!   carry its `trace.id`. The layer of
//!   [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) exports
//!   it, or counts it unsampled;
//! * counts the request in [`REQUESTS_METRIC`] and records its duration
//!   (until the response's head is ready) in [`DURATION_METRIC`], in
//!   milliseconds: a distribution, whose percentiles New Relic shows, unless
//!   the telemetry keeps histograms as summaries
//!   ([`TelemetryBuilder::histogram_kind`](crate::TelemetryBuilder::histogram_kind));
//!   both by `http.request.method`, `http.route` and
//!   `http.response.status_code` (or `http.response.status_class`, `2xx`
//!   ..., with `status_classes(true)`).
//!
//! The route is a template, never the raw path, so that `/users/7` and
//! `/users/8` are one series: axum's [`MatchedPath`] with the `axum` feature,
//! or what the function given to [`HttpServerLayer::route_with`] returns;
//! with actix-web, the pattern of the resource the path matches
//! (`HttpRequest::match_pattern`, scopes included). A request with no known
//! route (a 404 from a fallback or default service, say) has no
//! `http.route`. Methods other than the nine standard ones count as
//! `_OTHER`: a client cannot make new series by inventing methods.
//!
//! The span is created inside
//! [`with_remote_parent`](crate::tracing_layer::with_remote_parent), so the
//! sampling decision is made when it is created: an unsampled request
//! costs a span with no attributes and two metric updates. The updates go
//! to the telemetry's metric batch: into a series that exists they take no
//! lock and allocate nothing (the first request of a series creates it).
//!
//! [`MatchedPath`]: https://docs.rs/axum/0.8/axum/extract/struct.MatchedPath.html
//! [Layer]: https://docs.rs/tower-layer/0.3/tower_layer/trait.Layer.html
//!
//! With axum:
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
//! let http = reqwest::Client::new();
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
//!
//! With actix-web (a service in full: `examples/actix_service.rs`):
//!
//! ```
//! use actix_web::{App, HttpResponse, test, web};
//! use newrelic_telemetry::middleware::ActixMiddleware;
//! use newrelic_telemetry::test_util::TestIngestServer;
//! use tracing_subscriber::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // What `#[actix_web::main]` expands to.
//! actix_web::rt::System::new().block_on(async {
//!     let server = TestIngestServer::start().await?;
//!     let telemetry = server.telemetry_builder().service_name("orders").build()?;
//!     let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(telemetry.tracing_layer()));
//!
//!     let app = test::init_service(
//!         App::new()
//!             .wrap(ActixMiddleware::new(&telemetry).status_classes(true))
//!             .route("/orders/{id}", web::get().to(|| async { HttpResponse::Ok().body("an order") })),
//!     )
//!     .await;
//!     let request = test::TestRequest::get()
//!         .uri("/orders/7")
//!         .insert_header(("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
//!         .to_request();
//!     assert!(test::call_service(&app, request).await.status().is_success());
//!     telemetry.shutdown().await;
//!
//!     let span = &server.spans()[0];
//!     assert_eq!(span["trace.id"], "4bf92f3577b34da6a3ce929d0e0e4736");
//!     assert_eq!(span["attributes"]["name"], "GET /orders/{id}");
//!     assert_eq!(span["attributes"]["url.path"], "/orders/7");
//!     let requests = server.metrics().into_iter().find(|m| m["name"] == "http.server.requests").unwrap();
//!     assert_eq!(requests["attributes"]["http.route"], "/orders/{id}");
//!     assert_eq!(requests["attributes"]["http.response.status_class"], "2xx");
//!     Ok(())
//! })
//! # }
//! ```

// The links to the other feature's types, when it is off (docs.rs builds
// with every feature).
#![cfg_attr(
    feature = "tower",
    doc = "[`HttpServerLayer`]: HttpServerLayer\n[`HttpServerLayer::route_with`]: HttpServerLayer::route_with"
)]
#![cfg_attr(
    not(feature = "tower"),
    doc = "[`HttpServerLayer`]: https://docs.rs/newrelic-telemetry/latest/newrelic_telemetry/middleware/struct.HttpServerLayer.html\n[`HttpServerLayer::route_with`]: https://docs.rs/newrelic-telemetry/latest/newrelic_telemetry/middleware/struct.HttpServerLayer.html#method.route_with"
)]
#![cfg_attr(feature = "actix-web", doc = "[`ActixMiddleware`]: ActixMiddleware")]
#![cfg_attr(
    not(feature = "actix-web"),
    doc = "[`ActixMiddleware`]: https://docs.rs/newrelic-telemetry/latest/newrelic_telemetry/middleware/struct.ActixMiddleware.html"
)]

use crate::attributes::{AsAttributes, ValueRef};

#[cfg(feature = "actix-web")]
mod actix;
#[cfg(feature = "tower")]
mod tower;

#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub use actix::{ActixMiddleware, ActixMiddlewareService};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use tower::{HttpServerLayer, HttpServerService, ResponseFuture};

/// The target of the middleware's request spans. It is not a module of
/// this crate, whose own targets the tracing layer never exports; a
/// per-layer filter by target must let it through for request spans to be
/// exported.
///
/// ```
/// use newrelic_telemetry::middleware::SPAN_TARGET;
/// use tracing_subscriber::filter::Targets;
///
/// // Request spans at INFO, everything else of the service at WARN.
/// let filter = Targets::new().with_target(SPAN_TARGET, tracing::Level::INFO).with_default(tracing::Level::WARN);
/// assert!(filter.would_enable(SPAN_TARGET, &tracing::Level::INFO));
/// ```
pub const SPAN_TARGET: &str = "http_server";

/// The count of requests, by method, route and status.
///
/// ```
/// assert_eq!(newrelic_telemetry::middleware::REQUESTS_METRIC, "http.server.requests");
/// ```
pub const REQUESTS_METRIC: &str = "http.server.requests";

/// Request durations in milliseconds (from the request's arrival to its
/// response's head), by method, route and status: a distribution, or a
/// summary where the metric batch keeps histograms as summaries
/// ([`MetricBatch::record_histogram`](crate::MetricBatch::record_histogram)).
///
/// ```
/// assert_eq!(newrelic_telemetry::middleware::DURATION_METRIC, "http.server.duration.ms");
/// ```
pub const DURATION_METRIC: &str = "http.server.duration.ms";

/// A method as a metric attribute: the standard ones by name, any other as
/// `_OTHER` (a client must not be able to make series). By its name, so
/// that `http` 1's and actix-web's (`http` 0.2's) methods read alike.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
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

/// Records a response's status on its request span (a 5xx flags it as an
/// error) and returns it as the metrics record it.
fn record_status(span: &tracing::Span, code: u16) -> Outcome {
    span.record("http.response.status_code", code);
    if code >= 500 {
        span.record("error", true);
    }
    Outcome::Status(code)
}

/// How a request ended, as the metrics record it.
#[derive(Clone, Copy)]
enum Outcome {
    Status(u16),
    /// The service failed without a response (tower only: actix-web makes
    /// a response of every error).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_nine_are_other() {
        for method in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ] {
            assert_eq!(method_label(method), method);
        }
        for method in ["BREW", "get", "PROPFIND", ""] {
            assert_eq!(method_label(method), "_OTHER");
        }
    }

    #[test]
    fn status_classes_cover_every_code() {
        let class = |code| {
            let attributes = RequestAttributes {
                method: "GET",
                route: None,
                outcome: Outcome::Status(code),
                status_classes: true,
            };
            let mut found = None;
            attributes.for_each_attribute(|name, value| {
                if let ("http.response.status_class", ValueRef::Str(class)) = (name, value) {
                    found = Some(class.to_owned());
                }
            });
            found
        };
        assert_eq!(class(100).as_deref(), Some("1xx"));
        assert_eq!(class(204).as_deref(), Some("2xx"));
        assert_eq!(class(308).as_deref(), Some("3xx"));
        assert_eq!(class(418).as_deref(), Some("4xx"));
        assert_eq!(class(599).as_deref(), Some("5xx"));
        assert_eq!(class(99).as_deref(), Some("other"));
        assert_eq!(class(600).as_deref(), Some("other"));
    }
}
