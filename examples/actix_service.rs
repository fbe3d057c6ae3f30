//! An actix-web service with telemetry: two workers on 127.0.0.1, every
//! request in a span that continues its `traceparent`, counted and timed by
//! route pattern (`/orders/{id}`, not `/orders/7`), method and status; the
//! handlers' `tracing` spans and logs exported through
//! `Telemetry::tracing_layer()`.
//!
//! ```sh
//! PORT=8080 cargo run --example actix_service   # PORT unset or 0: any free port
//! curl localhost:8080/orders/7                  # in another terminal
//! kill -TERM <pid>                              # or Ctrl-C
//! ```
//!
//! Shutdown is actix-web's own: its server listens for SIGTERM (a graceful
//! stop: no new connections, the requests in flight finish, within its
//! shutdown timeout of 30 s) and SIGINT/Ctrl-C (a quick stop) itself, so
//! this service installs no signal handler of its own
//! (`newrelic_telemetry::shutdown_signal` is for servers that take a
//! shutdown future). `server.await` returns once every worker has stopped,
//! when nothing more can be recorded, and only then is
//! `telemetry.shutdown().await` called, flushing what the workers recorded.
//! The same holds under `#[actix_web::main]`, which is what `main` below
//! spells out (the `macros` feature of actix-web is not needed for it).
//!
//! With no `NEW_RELIC_API_KEY` (or `NEW_RELIC_LICENSE_KEY`) it sends to a local ingest endpoint on
//! 127.0.0.1, as the quickstart does, and prints what arrived.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use newrelic_telemetry::local::LocalEndpoint;
use newrelic_telemetry::middleware::ActixMiddleware;
use newrelic_telemetry::{Telemetry, TelemetryReport};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // What `#[actix_web::main]` expands to: actix's runtime on this thread.
    actix_web::rt::System::new().block_on(async {
        // New Relic when NEW_RELIC_API_KEY is set; a local endpoint otherwise.
        let local = LocalEndpoint::start_unless_keyed().await?;
        let telemetry = telemetry(local.as_ref())?;

        let listener = TcpListener::bind(("127.0.0.1", port()?))?;
        println!("listening on http://{}", listener.local_addr()?);
        let report = run(serve(&telemetry, listener, 2)?, telemetry).await?;

        println!("telemetry: {report}");
        if let Some(local) = local {
            println!("local endpoint: {:?}", Received::from(&local));
        }
        Ok(())
    })
}

/// Telemetry that sends to `local`, or where the `NEW_RELIC_*` variables
/// say; its tracing layer installed for the process (every worker thread),
/// exporting spans and logs at INFO and above (and printing them).
fn telemetry(local: Option<&LocalEndpoint>) -> Result<Telemetry, Box<dyn std::error::Error>> {
    let telemetry = Telemetry::builder()
        .service_name("orders")
        .local_endpoint(local)
        .build()?;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(telemetry.tracing_layer())
        .with(LevelFilter::INFO)
        .try_init();
    Ok(telemetry)
}

/// The service on `listener`, with `workers` workers (threads, each with
/// its own single-threaded runtime and its own copy of the app).
fn serve(telemetry: &Telemetry, listener: TcpListener, workers: usize) -> io::Result<Server> {
    let middleware = ActixMiddleware::new(telemetry);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware.clone())
            .route("/", web::get().to(|| async { "ok\n" }))
            .route("/orders/{id}", web::get().to(order))
    })
    .workers(workers)
    .listen(listener)?;
    Ok(server.run())
}

/// Serves until actix-web's server stops (SIGTERM, SIGINT), then flushes
/// the telemetry: after the workers, so nothing they recorded is lost.
async fn run(server: Server, telemetry: Telemetry) -> io::Result<TelemetryReport> {
    server.await?;
    Ok(telemetry.shutdown().await)
}

/// `GET /orders/{id}`: a span and a log, inside the request's span.
async fn order(id: web::Path<u64>) -> String {
    let id = id.into_inner();
    let span = tracing::info_span!("load order", order.id = id);
    // The order's work (a database, say); the span is entered only while
    // this request's code runs, as the worker interleaves requests.
    tokio::time::sleep(Duration::from_millis(5)).await;
    span.in_scope(|| tracing::info!(order.id = id, "order loaded"));
    format!("order {id}\n")
}

/// `PORT`, or 0 (any free port).
fn port() -> Result<u16, Box<dyn std::error::Error>> {
    match std::env::var("PORT") {
        Ok(port) if !port.trim().is_empty() => Ok(port.trim().parse()?),
        _ => Ok(0),
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
    /// Request spans (`span.kind: server`).
    server_spans: usize,
    /// The handlers' `load order` spans.
    order_spans: usize,
}

impl From<&LocalEndpoint> for Received {
    fn from(local: &LocalEndpoint) -> Self {
        let mut received = Received::default();
        for request in local.requests() {
            for block in request.body.as_array().into_iter().flatten() {
                for metric in block["metrics"].as_array().into_iter().flatten() {
                    if metric["name"] == "http.server.requests" {
                        received.requests_counted += metric["value"].as_f64().unwrap_or(0.0) as u64;
                    }
                }
                for span in block["spans"].as_array().into_iter().flatten() {
                    if span["attributes"]["span.kind"] == "server" {
                        received.server_spans += 1;
                    } else if span["attributes"]["name"] == "load order" {
                        received.order_spans += 1;
                    }
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

/// Runs the service in this test binary (its only test), with several
/// workers, sends it requests over loopback, then sends this process a real
/// SIGTERM, which actix-web's server handles.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Every wait in this test is bounded by this.
    const BOUND: Duration = Duration::from_secs(30);

    #[test]
    fn counts_every_request_of_every_worker_and_flushes_on_sigterm() {
        actix_web::rt::System::new().block_on(async {
            let local = LocalEndpoint::start().await.unwrap();
            let telemetry = telemetry(Some(&local)).unwrap();
            let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = serve(&telemetry, listener, 3).unwrap();
            let service = actix_web::rt::spawn(run(server, telemetry.clone()));

            // A new connection per request: actix-web hands connections to
            // its workers in turn, so every worker serves some.
            let http = newrelic_telemetry::client::http_client_builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            const N: usize = 30;
            let requests = (0..N).map(|i| {
                let request = match i % 3 {
                    0 => http.get(format!("{base}/")),
                    _ => http.get(format!("{base}/orders/{i}")),
                };
                async move { request.send().await.map(|r| r.status()) }
            });
            let statuses = tokio::time::timeout(BOUND, futures::future::join_all(requests))
                .await
                .unwrap();
            for status in &statuses {
                assert!(status.as_ref().is_ok_and(|s| s.is_success()), "{status:?}");
            }
            drop(http);

            // The server's signal handler was installed when it started,
            // before it served the requests above.
            let kill = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            let report = tokio::time::timeout(BOUND, service)
                .await
                .expect("the server stops on SIGTERM")
                .unwrap()
                .unwrap();

            assert_eq!(
                Received::from(&local),
                Received {
                    requests_counted: N as u64,
                    requests_timed: N as u64,
                    server_spans: N,
                    order_spans: N - N.div_ceil(3),
                }
            );
            assert_eq!((report.items_dropped(), report.items_refused()), (0, 0));
        });
    }
}
