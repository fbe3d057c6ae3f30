//! A long-running service: telemetry set up in `main`, request handlers that
//! record on every request, and a shutdown on SIGTERM or Ctrl-C that loses
//! nothing.
//!
//! ```sh
//! cargo run --example service                 # until Ctrl-C / SIGTERM
//! cargo run --example service -- --run-for 3  # or for 3 seconds
//! ```
//!
//! With no `NEW_RELIC_API_KEY` it sends to a local ingest endpoint and prints
//! a summary of what arrived.

use std::sync::Arc;
use std::time::Duration;

use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{Event, Log, Span, Telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let run_for = run_for_argument()?;

    let has_key = ["NEW_RELIC_API_KEY", "NEW_RELIC_LICENSE_KEY"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|k| !k.trim().is_empty()));
    let local = if has_key {
        None
    } else {
        Some(TestIngestServer::start().await?)
    };
    let telemetry = Arc::new(
        match &local {
            Some(server) => server.telemetry_builder(),
            None => Telemetry::builder(),
        }
        .service_name("orders")
        .harvest_interval(Duration::from_secs(1))
        .build()?,
    );

    // The service's own token stops the request handlers first; telemetry is
    // shut down after them, so their last records make it into the final flush.
    let service = CancellationToken::new();
    let handlers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(handle_requests(id, telemetry.clone(), service.clone())))
        .collect();

    wait_for_shutdown_signal(run_for).await?;
    tracing::info!("shutting down");
    service.cancel();
    for handler in handlers {
        handler.await?;
    }
    let report = telemetry.shutdown().await;
    tracing::info!(
        sent = report.items_sent(),
        dropped = report.items_dropped(),
        "telemetry flushed"
    );

    if let Some(server) = local {
        let orders: f64 = server
            .metrics()
            .iter()
            .filter(|m| m["name"] == "orders.placed")
            .filter_map(|m| m["value"].as_f64())
            .sum();
        println!(
            "local endpoint received {} requests: {} orders counted, {} events, {} logs, {} spans",
            server.requests().len(),
            orders,
            server.events().len(),
            server.logs().len(),
            server.spans().len()
        );
    }
    Ok(())
}

/// A stand-in for request handlers: each "request" records a count, a
/// summary, a span, and now and then an event and a log.
async fn handle_requests(worker: u32, telemetry: Arc<Telemetry>, stop: CancellationToken) {
    let mut served = 0u64;
    while !stop.is_cancelled() {
        let span = Span::new("POST /orders").with_service_name("orders");
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(20 + u64::from(worker) * 5)) => {}
        }
        served += 1;
        let plan = if served % 3 == 0 { "pro" } else { "free" };
        // Recording errors are counted by the batch; a handler never fails
        // because of telemetry.
        let _ = telemetry
            .metrics()
            .record_count("orders.placed", 1.0, [("plan", plan)])
            .await;
        let _ = telemetry
            .metrics()
            .record_summary(
                "orders.latency.ms",
                20.0 + f64::from(worker) * 5.0,
                [("plan", plan)],
            )
            .await;
        let _ = telemetry.spans().record(span.finish()).await;
        if served % 10 == 0 {
            let _ = telemetry
                .events()
                .record(
                    Event::new("OrderBatch")
                        .with_attribute("worker", worker)
                        .with_attribute("served", served),
                )
                .await;
            let _ = telemetry
                .logs()
                .record(
                    Log::new(format!("worker {worker} served {served} orders")).with_level("INFO"),
                )
                .await;
        }
    }
}

fn run_for_argument() -> Result<Option<Duration>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--run-for") {
        None => Ok(None),
        Some(i) => {
            let secs: f64 = args
                .get(i + 1)
                .ok_or("--run-for needs a number of seconds")?
                .parse()?;
            Ok(Some(Duration::from_secs_f64(secs)))
        }
    }
}

async fn wait_for_shutdown_signal(run_for: Option<Duration>) -> std::io::Result<()> {
    let deadline = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
            () = deadline => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        () = deadline => {}
    }
    Ok(())
}
