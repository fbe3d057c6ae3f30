//! Exports a program's `tracing` spans and events to New Relic, next to the
//! usual console output.
//!
//! ```text
//! NEW_RELIC_API_KEY=... cargo run --example tracing_layer --features tracing-layer
//! ```
//!
//! Without `NEW_RELIC_API_KEY` it sends to an in-process test server and prints
//! what arrived.

use std::sync::Arc;
use std::time::Duration;

use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::tracing_layer::NewRelicLayer;
use newrelic_telemetry::{Harvester, LogBatch, LogClient, SpanBatch, SpanClient};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::{error, info, info_span, warn};
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Where to send: New Relic when a key is given, else a local test server.
    let (key, server) = match std::env::var("NEW_RELIC_API_KEY") {
        Ok(key) => (key, None),
        Err(_) => (
            "local-test-key".to_owned(),
            Some(TestIngestServer::start().await?),
        ),
    };
    let mut span_client = SpanClient::builder(&key);
    let mut log_client = LogClient::builder(&key);
    if let Some(server) = &server {
        span_client = span_client.endpoint(server.span_url());
        log_client = log_client.endpoint(server.log_url());
    }

    let spans = Arc::new(SpanBatch::new());
    let logs = Arc::new(LogBatch::new());
    let span_harvester = Harvester::builder(spans.clone(), span_client.build()?)
        .harvest_interval(Duration::from_secs(5))
        .spawn();
    let log_harvester = Harvester::builder(logs.clone(), log_client.build()?)
        .harvest_interval(Duration::from_secs(5))
        .spawn();

    // The layer, with its own filter: INFO and above, but not the health checks.
    // The console layer still prints everything at INFO and above, health
    // checks included.
    let (layer, worker) = NewRelicLayer::builder()
        .spans(spans)
        .logs(logs)
        .service_name("tracing-layer-example")
        .build();
    let layer_stats = layer.handle();
    let new_relic_filter =
        LevelFilter::INFO.and(filter_fn(|metadata| metadata.target() != "health"));
    tracing_subscriber::registry()
        .with(layer.with_filter(new_relic_filter))
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO))
        .init();
    let stop_worker = CancellationToken::new();
    let worker = worker.spawn(stop_worker.clone());

    // The application.
    for order in 1..=3_u64 {
        handle_order(order)
            .instrument(info_span!("order", order.id = order, customer = "acme"))
            .await;
    }
    info!(target: "health", "still alive (console only)");

    // Shutdown: drain the layer's channel into the batches, then flush and send.
    stop_worker.cancel();
    worker.await?;
    let spans_report = span_harvester.shutdown().await;
    let logs_report = log_harvester.shutdown().await;
    println!(
        "sent {} spans and {} logs; the layer dropped {}",
        spans_report.delivery.items_sent,
        logs_report.delivery.items_sent,
        layer_stats.stats().items_dropped_channel_full
    );

    if let Some(server) = server {
        for span in server.spans() {
            println!("span {}", span);
        }
        for log in server.logs() {
            println!("log  {}", log);
        }
    }
    Ok(())
}

async fn handle_order(order: u64) {
    info!(items = order * 2, "order received");
    let charged = charge(order)
        .instrument(info_span!("charge card", amount = 12.5 * order as f64))
        .await;
    match charged {
        Ok(()) => info!("order complete"),
        Err(reason) => warn!(%reason, "order left unpaid"),
    }
}

async fn charge(order: u64) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(10 * order)).await;
    if order == 2 {
        // Flags the "charge card" span with error = true.
        error!(code = 402, "card declined");
        return Err("card declined".to_owned());
    }
    Ok(())
}
