//! A web service with telemetry: an axum server on 127.0.0.1 whose
//! `HttpServerLayer` counts every request and times it by route, method and
//! status, with a span per request; it records an event per order, exports its `tracing` spans and logs through
//! `Telemetry::tracing_layer()`, and on SIGTERM (or Ctrl-C) stops accepting,
//! finishes the requests in flight, then flushes the telemetry and prints
//! the report.
//!
//! ```sh
//! PORT=8080 cargo run --example service    # PORT unset or 0: any free port
//! curl localhost:8080/                     # in another terminal
//! curl -X POST localhost:8080/orders
//! kill -TERM <pid>                         # or Ctrl-C
//! ```
//!
//! With no `NEW_RELIC_API_KEY` it sends to a local ingest endpoint on
//! 127.0.0.1, as the quickstart does, and prints a summary of what arrived.
//! `NEW_RELIC_ENABLED=false` runs it with telemetry off.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use newrelic_telemetry::distribution::Distribution;
use newrelic_telemetry::local::LocalEndpoint;
use newrelic_telemetry::middleware::HttpServerLayer;
use newrelic_telemetry::{Event, Telemetry, TelemetryReport, shutdown_signal};
use tokio::net::TcpListener;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // New Relic when NEW_RELIC_API_KEY is set; a local endpoint otherwise.
    let local = LocalEndpoint::start_unless_keyed().await?;
    let telemetry = Telemetry::builder()
        .service_name("orders")
        .local_endpoint(local.as_ref())
        .build()?;
    install_tracing(&telemetry);

    let listener = TcpListener::bind(("127.0.0.1", port()?)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let report = run(listener, telemetry, shutdown_signal()).await?;

    println!("telemetry: {report}");
    if let Some(local) = local {
        print_received(&local);
    }
    Ok(())
}

/// Serves until `shutdown` completes, then finishes the requests in flight
/// and shuts the telemetry down (its tracing layer first, then the batches).
async fn run(
    listener: TcpListener,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<TelemetryReport> {
    axum::serve(listener, app(telemetry.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(telemetry.shutdown().await)
}

/// The routes, and the SDK's middleware: a span per request (continuing an
/// incoming `traceparent`), `http.server.requests` and
/// `http.server.duration.ms` by route pattern, method and status.
fn app(telemetry: Telemetry) -> Router {
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/orders", post(place_order))
        .layer(HttpServerLayer::new(&telemetry))
        .with_state(telemetry)
}

/// `POST /orders`: an event and a log line per order.
async fn place_order(State(telemetry): State<Telemetry>) -> (StatusCode, String) {
    static NEXT_ORDER: AtomicU64 = AtomicU64::new(1);
    let order_id = NEXT_ORDER.fetch_add(1, Ordering::Relaxed);
    // Recording never fails a request: a refusal is counted by the batch.
    telemetry
        .events()
        .record(Event::new("OrderPlaced").with_attribute("order.id", order_id))
        .await;
    tracing::info!(order.id = order_id, "order placed");
    // The order's work (a payment provider, say).
    tokio::time::sleep(Duration::from_millis(50)).await;
    (StatusCode::CREATED, format!("order {order_id}\n"))
}

/// Logs to the terminal, and exports spans and logs at INFO and above.
fn install_tracing(telemetry: &Telemetry) {
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO))
        .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO))
        .try_init();
}

/// `PORT`, or 0 (any free port).
fn port() -> Result<u16, Box<dyn std::error::Error>> {
    match std::env::var("PORT") {
        Ok(port) if !port.trim().is_empty() => Ok(port.trim().parse()?),
        _ => Ok(0),
    }
}

/// What the local endpoint received, summed, and the requests' latency
/// percentiles read from the distributions that arrived.
fn print_received(local: &LocalEndpoint) {
    let received = Received::from(local);
    println!(
        "local endpoint: {} requests counted, {} timed, {} order events, {} logs, {} spans",
        received.requests_counted,
        received.requests_timed,
        received.orders,
        received.logs,
        received.spans
    );
    let mut latency = Distribution::new();
    for d in local.distributions() {
        if d.name == "http.server.duration.ms" {
            let _ = latency.merge(&d.distribution);
        }
    }
    if let (Some(p50), Some(p99)) = (latency.quantile(0.5), latency.quantile(0.99)) {
        println!("request time: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
}

/// What a local endpoint received, in the service's terms.
#[derive(Debug, Default, PartialEq)]
struct Received {
    /// The sum of the `http.server.requests` counts.
    requests_counted: u64,
    /// The `http.server.duration.ms` observations (distributions, which
    /// arrive over OTLP).
    requests_timed: u64,
    /// `OrderPlaced` events.
    orders: usize,
    /// Log records.
    logs: usize,
    /// Spans.
    spans: usize,
}

impl From<&LocalEndpoint> for Received {
    fn from(local: &LocalEndpoint) -> Self {
        let mut received = Received::default();
        for request in local.requests() {
            let Some(blocks) = request.body.as_array() else {
                continue;
            };
            for block in blocks {
                for metric in block["metrics"].as_array().into_iter().flatten() {
                    if metric["name"] == "http.server.requests" {
                        received.requests_counted += metric["value"].as_f64().unwrap_or(0.0) as u64;
                    }
                }
                received.logs += block["logs"].as_array().map_or(0, Vec::len);
                received.spans += block["spans"].as_array().map_or(0, Vec::len);
                if block["eventType"] == "OrderPlaced" {
                    received.orders += 1;
                }
            }
        }
        received.requests_timed = local
            .distributions()
            .iter()
            .filter(|d| d.name == "http.server.duration.ms")
            .map(|d| d.distribution.count())
            .sum();
        received
    }
}

/// Runs the service in this test binary (its only test), sends it requests
/// over loopback, then sends this process a real SIGTERM.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Every wait in this test is bounded by this.
    const BOUND: Duration = Duration::from_secs(30);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_every_request_and_flushes_on_sigterm() {
        let local = LocalEndpoint::start().await.unwrap();
        let telemetry = Telemetry::builder()
            .service_name("orders")
            .local_endpoint(&local)
            // Nothing is harvested before shutdown: the final flush carries it all.
            .harvest_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        install_tracing(&telemetry);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Installed before the service starts: the SIGTERM below is caught.
        let service = tokio::spawn(run(listener, telemetry.clone(), shutdown_signal()));

        let http = newrelic_telemetry::client::http_client_builder()
            .no_proxy()
            .build()
            .unwrap();
        const GETS: usize = 20;
        const ORDERS: usize = 10;
        let requests = (0..GETS + ORDERS).map(|i| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let request = if i < GETS {
                    http.get(format!("{base}/"))
                } else {
                    http.post(format!("{base}/orders"))
                };
                request.send().await.map(|r| r.status())
            }
        });
        let statuses = tokio::time::timeout(BOUND, futures::future::join_all(requests))
            .await
            .unwrap();
        for status in &statuses {
            assert!(status.as_ref().is_ok_and(|s| s.is_success()), "{status:?}");
        }

        // One more order, in flight when SIGTERM arrives: its event is
        // recorded as the handler starts, and it must still complete.
        let in_flight = tokio::spawn({
            let http = http.clone();
            let base = base.clone();
            async move {
                http.post(format!("{base}/orders"))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        });
        tokio::time::timeout(BOUND, async {
            while telemetry.stats().events.memory.held_items < ORDERS + 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        let kill = tokio::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .await
            .unwrap();
        assert!(kill.success());

        let status = tokio::time::timeout(BOUND, in_flight)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            status.unwrap(),
            StatusCode::CREATED,
            "the request in flight was drained"
        );
        let report = tokio::time::timeout(BOUND, service)
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        let n = (GETS + ORDERS + 1) as u64;
        assert_eq!(
            Received::from(&local),
            Received {
                requests_counted: n,
                requests_timed: n,
                orders: ORDERS + 1,
                logs: ORDERS + 1,
                spans: GETS + ORDERS + 1,
            }
        );
        assert_eq!((report.items_dropped(), report.items_refused()), (0, 0));
        assert!(!report.deadline_exceeded());
    }
}
