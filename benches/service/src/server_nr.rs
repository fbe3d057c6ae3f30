//! The service with this crate, as its README sets one up: a `Telemetry`
//! configured from the `NEW_RELIC_*` variables (key, endpoints, harvest
//! interval, `NEW_RELIC_ENABLED`), its tracing layer at INFO, its HTTP
//! middleware, and on shutdown a flush whose report is printed (the driver
//! reads the `nr-report` line from the service's log).

use actix_web::{App, HttpServer};
use newrelic_telemetry::middleware::{ActixMiddleware, HttpServerLayer};
use newrelic_telemetry::tracing_layer::current_trace_context;
use newrelic_telemetry::{Event, Telemetry, TelemetryReport, attrs, shutdown_signal};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

use crate::Error;
use crate::app::{self, AppState, Order};

/// This build's per-request recording: the `Order` event, the business
/// counter and the outgoing `traceparent`.
#[derive(Clone)]
pub struct Instruments {
    telemetry: Telemetry,
}

impl Instruments {
    /// `traceparent` (and `tracestate`) of the current span, the client span.
    pub fn inject(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match current_trace_context() {
            Some(context) => context.inject_into(request),
            None => request,
        }
    }

    /// An `Order` event and a count in `orders.placed`.
    pub async fn order_placed(&self, order: &Order) {
        let event = Event::new("Order").with_attributes(attrs![
            "order.id" => order.id,
            "items" => order.items,
            "amount" => order.amount,
            "currency" => order.currency,
            "customer.tier" => order.customer_tier,
            "payload.bytes" => order.payload_bytes,
        ]);
        self.telemetry.events().record(event).await;
        self.telemetry
            .metrics()
            .record_count(
                "orders.placed",
                1,
                attrs!["customer.tier" => order.customer_tier],
            )
            .await;
    }
}

/// The telemetry, from the environment, and the process's subscriber: the
/// crate's layer at INFO. (No other layer: what the crate drops, it counts
/// in the report printed at exit.)
fn telemetry() -> Result<Telemetry, Error> {
    let telemetry = Telemetry::builder().service_name("orders").build()?;
    tracing_subscriber::registry()
        .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO))
        .try_init()?;
    println!("telemetry enabled: {}", telemetry.is_enabled());
    Ok(telemetry)
}

pub fn run_axum(port: u16) -> Result<(), Error> {
    app::axum_runtime()?.block_on(async {
        let telemetry = telemetry()?;
        let instr = Instruments {
            telemetry: telemetry.clone(),
        };
        let router =
            app::axum_routes(AppState::new(port, instr)).layer(HttpServerLayer::new(&telemetry));
        let listener = app::axum_listener(port).await?;
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        print_report(&telemetry, &telemetry.shutdown().await);
        Ok(())
    })
}

pub fn run_actix(port: u16) -> Result<(), Error> {
    // What `#[actix_web::main]` expands to; actix-web handles SIGTERM.
    actix_web::rt::System::new().block_on(async {
        let telemetry = telemetry()?;
        let middleware = ActixMiddleware::new(&telemetry);
        let instr = Instruments {
            telemetry: telemetry.clone(),
        };
        HttpServer::new(move || {
            App::new()
                .wrap(middleware.clone())
                .app_data(app::actix_state(port, instr.clone()))
                .configure(app::actix_routes)
        })
        .workers(app::WORKERS)
        .bind(app::actix_address(port))?
        .run()
        .await?;
        print_report(&telemetry, &telemetry.shutdown().await);
        Ok(())
    })
}

/// One line the driver parses: `nr-report key=value ...`.
fn print_report(telemetry: &Telemetry, report: &TelemetryReport) {
    let layer = &report.layer;
    println!(
        "nr-report enabled={} sent={} dropped={} refused={} discarded={} deadline_exceeded={} \
         spans_recorded={} logs_recorded={} spans_unsampled={} layer_channel_full={} layer_worker_gone={} layer_by_batch={}",
        telemetry.is_enabled(),
        report.items_sent(),
        report.items_dropped(),
        report.items_refused(),
        report.items_discarded(),
        report.deadline_exceeded(),
        layer.spans_recorded,
        layer.logs_recorded,
        layer.spans_unsampled,
        layer.items_dropped_channel_full,
        layer.items_dropped_worker_gone,
        layer.items_dropped_by_batch,
    );
}
