//! Records a few metrics, events, logs and spans, harvests them and exits.
//!
//! With `NEW_RELIC_API_KEY` (or `NEW_RELIC_LICENSE_KEY`) set, it sends to New
//! Relic (`NEW_RELIC_REGION=EU` for the EU data center). With no key it starts
//! a [`LocalEndpoint`] on 127.0.0.1 (feature `local-endpoint`), sends there,
//! and prints what that endpoint received, decoded:
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! In your own service, keep the `Telemetry::builder()` part and drop the
//! local endpoint: the `NEW_RELIC_*` variables say where to send.

use std::time::Duration;

use newrelic_telemetry::local::LocalEndpoint;
use newrelic_telemetry::{Event, Log, Span, SpanEvent, Telemetry, attrs};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "newrelic_telemetry=info".into()),
        )
        .init();

    // New Relic when NEW_RELIC_API_KEY is set; a local endpoint otherwise.
    let local = LocalEndpoint::start_unless_keyed().await?;

    // Key, region, endpoints and harvest interval come from NEW_RELIC_*
    // variables; the settings below are made in code.
    let telemetry = Telemetry::builder()
        .service_name("quickstart")
        .common_attributes(attrs!["host" => "localhost"])
        .shutdown_timeout(Duration::from_secs(15))
        .local_endpoint(local.as_ref())
        .build()?;

    // Metrics aggregate in the batch: a count per route, whatever the
    // number of requests, and a distribution of their durations, from which
    // New Relic reads percentiles (it goes over OTLP).
    let metrics = telemetry.metrics();
    for i in 0..200u32 {
        let (route, ms) = match i % 4 {
            0 => ("/cart", 20.0 + f64::from(i % 13)),
            _ => ("/checkout", 60.0 + f64::from(i * 37 % 90)),
        };
        metrics
            .record_count("http.requests", 1.0, [("route", route)])
            .await;
        metrics
            .record_distribution("http.duration.ms", ms, [("route", route)])
            .await;
    }
    // Three slow checkouts (2%): p99 shows them, p90 does not.
    for ms in [2_100.0, 2_400.0, 2_600.0] {
        metrics
            .record_distribution("http.duration.ms", ms, [("route", "/checkout")])
            .await;
    }
    metrics.record_gauge("queue.depth", 7.0, ()).await;
    metrics
        .record_summary("payment.amount", 42.5, [("currency", "EUR")])
        .await;

    telemetry
        .events()
        .record(
            Event::new("Purchase")
                .with_attribute("amount", 42.5)
                .with_attribute("currency", "EUR"),
        )
        .await;
    telemetry
        .logs()
        .record(
            Log::new("order placed")
                .with_level("INFO")
                .with_attribute("order.id", 1001),
        )
        .await;

    let root = Span::new("POST /checkout");
    let child = root
        .child("charge card")
        .with_event(SpanEvent::new("retry").with_attribute("attempt", 2))
        .with_duration(Duration::from_millis(40));
    telemetry.spans().record(child).await;
    telemetry
        .spans()
        .record(root.with_duration(Duration::from_millis(120)))
        .await;

    // Stop the harvesters: everything still buffered is sent now.
    let report = telemetry.shutdown().await;
    println!(
        "Delivered {} items ({} dropped) in {} payloads.",
        report.items_sent(),
        report.items_dropped(),
        [&report.metrics, &report.events, &report.logs, &report.spans]
            .into_iter()
            .chain(&report.distributions)
            .map(|r| r.delivery.payloads_sent)
            .sum::<u64>()
    );

    if let Some(local) = local {
        for request in local.requests() {
            println!(
                "\n== POST {} -> {} ({} bytes gzipped, x-request-id {})",
                request.path,
                request.status,
                request.wire_bytes,
                request.header("x-request-id").unwrap_or("-")
            );
            println!("{}", serde_json::to_string_pretty(&request.body)?);
        }
        // Distributions, decoded from their OTLP protobuf, with the
        // percentiles read from their buckets.
        println!("\n== distributions (OTLP), percentiles from their buckets");
        for distribution in local.distributions() {
            println!("{distribution}");
        }
    }
    if report.items_dropped() > 0 {
        return Err("some telemetry was dropped; see the log above".into());
    }
    Ok(())
}
