//! The service with the OpenTelemetry stack a user would pick instead, set up
//! as its crates' documentation and examples do: `opentelemetry_sdk`'s
//! batch span processor, periodic metric reader (delta temporality, every
//! 5 s like this crate's harvests; its default is 60 s) and batch log
//! processor, each exporting OTLP over HTTP/protobuf with
//! `opentelemetry-otlp`'s default client to `OTEL_EXPORTER_OTLP_ENDPOINT`;
//! `tracing-opentelemetry` for the `tracing` spans and
//! `opentelemetry-appender-tracing` for the `tracing` events (both at INFO,
//! without the HTTP stack's own events, as the upstream OTLP example
//! filters them); W3C trace context.
//!
//! OpenTelemetry has no HTTP server middleware of its own for either
//! framework at this version, so [`track_axum`] and [`track_actix`] do what
//! this crate's middleware does: a server span continuing the request's
//! `traceparent`, and a request counter and duration histogram by method,
//! route and status. The `Order` event is a log record with the same
//! attributes, through the Logs API (OpenTelemetry's events are log records
//! with an event name).

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{Next as AxumNext, from_fn_with_state};
use axum::response::Response;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing::Level;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::Error;
use crate::app::{self, AppState, Order};

/// This build's per-request recording: the HTTP server metrics (for the
/// middleware), the business counter, the logger for the `Order` record.
#[derive(Clone)]
pub struct Instruments {
    requests: Counter<u64>,
    duration_ms: Histogram<f64>,
    orders_placed: Counter<u64>,
    logger: SdkLogger,
}

impl Instruments {
    /// `traceparent` of the current span (the client span), through the
    /// global propagator.
    pub fn inject(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let context = tracing::Span::current().context();
        let mut headers = reqwest::header::HeaderMap::new();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(&mut headers))
        });
        request.headers(headers)
    }

    /// An `Order` log record (the event) and a count in `orders.placed`.
    pub async fn order_placed(&self, order: &Order) {
        let mut record = self.logger.create_log_record();
        record.set_event_name("Order");
        record.set_severity_number(Severity::Info);
        record.add_attribute("order.id", order.id as i64);
        record.add_attribute("items", order.items as i64);
        record.add_attribute("amount", order.amount);
        record.add_attribute("currency", order.currency);
        record.add_attribute("customer.tier", order.customer_tier);
        record.add_attribute("payload.bytes", order.payload_bytes as i64);
        self.logger.emit(record);
        self.orders_placed
            .add(1, &[KeyValue::new("customer.tier", order.customer_tier)]);
    }

    /// The middleware's count and duration of one request.
    fn record_request(
        &self,
        method: &'static str,
        route: Option<String>,
        status: u16,
        elapsed: Duration,
    ) {
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route));
        }
        self.requests.add(1, &attributes);
        self.duration_ms
            .record(elapsed.as_secs_f64() * 1000.0, &attributes);
    }
}

/// The three providers, to shut down (flush) at exit.
struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
}

/// The providers, the global propagator and meter provider, and the
/// process's subscriber.
fn init() -> Result<(Providers, Instruments), Error> {
    let resource = Resource::builder().with_service_name("orders").build();

    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(SpanExporter::builder().with_http().build()?)
        .with_resource(resource.clone())
        .build();
    let metrics = MetricExporter::builder()
        .with_http()
        .with_temporality(Temporality::Delta)
        .build()?;
    let meter = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(metrics)
                .with_interval(Duration::from_secs(5))
                .build(),
        )
        .with_resource(resource.clone())
        .build();
    let logger = SdkLoggerProvider::builder()
        .with_batch_exporter(LogExporter::builder().with_http().build()?)
        .with_resource(resource)
        .build();

    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(tracer.clone());
    global::set_meter_provider(meter.clone());

    // INFO and above, but not the HTTP stack's own events (the exporters'
    // requests would otherwise make telemetry of their own).
    let exported = || {
        Targets::new()
            .with_default(Level::INFO)
            .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
            .with_target("h2", tracing::level_filters::LevelFilter::OFF)
            .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
            .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
            .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
    };
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer.tracer("orders"))
                .with_filter(exported()),
        )
        .with(OpenTelemetryTracingBridge::new(&logger).with_filter(exported()))
        // The SDK's own warnings (dropped spans, failed exports) on stderr.
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(Targets::new().with_target("opentelemetry", Level::WARN)),
        )
        .try_init()?;

    let m = global::meter("orders");
    let instruments = Instruments {
        requests: m.u64_counter("http.server.requests").build(),
        duration_ms: m
            .f64_histogram("http.server.duration.ms")
            .with_unit("ms")
            .build(),
        orders_placed: m.u64_counter("orders.placed").build(),
        logger: logger.logger("orders"),
    };
    Ok((
        Providers {
            tracer,
            meter,
            logger,
        },
        instruments,
    ))
}

/// Flushes and stops the providers, and prints how that went (the driver
/// reads the `otel-report` line from the service's log).
fn shutdown(providers: Providers) {
    let outcome = |r: Result<(), opentelemetry_sdk::error::OTelSdkError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{e:?}").replace(' ', "_"),
    };
    println!(
        "otel-report tracer={} meter={} logger={}",
        outcome(providers.tracer.shutdown()),
        outcome(providers.meter.shutdown()),
        outcome(providers.logger.shutdown()),
    );
}

pub fn run_axum(port: u16) -> Result<(), Error> {
    let (providers, instr) = init()?;
    app::axum_runtime()?.block_on(async {
        let router = app::axum_routes(AppState::new(port, instr.clone()))
            .layer(from_fn_with_state(instr, track_axum));
        let listener = app::axum_listener(port).await?;
        axum::serve(listener, router)
            .with_graceful_shutdown(app::terminated())
            .await?;
        Ok::<_, Error>(())
    })?;
    // The batch processors' threads do blocking exports: outside the runtime.
    shutdown(providers);
    Ok(())
}

pub fn run_actix(port: u16) -> Result<(), Error> {
    let (providers, instr) = init()?;
    actix_web::rt::System::new().block_on(async {
        HttpServer::new(move || {
            App::new()
                .wrap(from_fn(track_actix))
                .app_data(app::actix_state(port, instr.clone()))
                .configure(app::actix_routes)
        })
        .workers(app::WORKERS)
        .bind(app::actix_address(port))?
        .run()
        .await
    })?;
    shutdown(providers);
    Ok(())
}

/// The server span of a request: continuing `parent`'s trace, named
/// `{method} {route}`.
fn server_span(method: &'static str, route: Option<&str>, path: &str) -> tracing::Span {
    let route_or_path = route.unwrap_or(path);
    tracing::info_span!(
        "request",
        otel.name = format!("{method} {route_or_path}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = Empty,
    )
}

/// The axum middleware.
async fn track_axum(
    State(instr): State<Instruments>,
    request: Request,
    next: AxumNext,
) -> Response {
    let started = Instant::now();
    let method = method_name(request.method().as_str());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let span = server_span(method, route.as_deref(), request.uri().path());
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    instr.record_request(method, route, status, started.elapsed());
    response
}

/// The actix-web middleware.
async fn track_actix(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = request
        .app_data::<actix_web::web::Data<AppState>>()
        .cloned()
        .expect("the app's state");
    let method = method_name(request.method().as_str());
    let route = request.match_pattern();
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&ActixHeaders(request.headers()))
    });
    let span = server_span(method, route.as_deref(), request.path());
    let _ = span.set_parent(parent);
    let response = next.call(request).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    state
        .instr
        .record_request(method, route, status, started.elapsed());
    Ok(response)
}

/// actix-web's header map (its own type, `http` 0.2's) for the propagator.
struct ActixHeaders<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for ActixHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A method's name, with no allocation for the standard ones.
fn method_name(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "_OTHER",
    }
}
