//! The `log` facade: records from `log::info!` and friends (as dependencies
//! write them) go through `tracing-log`'s `LogTracer` and the tracing layer
//! of a `Telemetry` to a real ingest server on 127.0.0.1, as New Relic logs
//! with their level, target and trace context. One test: the `LogTracer` is
//! global to the process.

use std::time::Duration;

use newrelic_telemetry::tracing_layer::LogTracer;
use serde_json::Value as Json;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

mod support;

fn by_message<'a>(logs: &'a [Json], message: &str) -> &'a Json {
    logs.iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no log {message:?} in {logs:?}"))
}

#[tokio::test]
async fn log_records_arrive_as_logs_with_their_levels() {
    LogTracer::init().expect("the only logger of this test binary");
    let server = support::server().await;
    let telemetry = server
        .telemetry_builder()
        .service_name("payments")
        .harvest_interval(support::HOUR)
        .build()
        .expect("telemetry");
    let subscriber = tracing_subscriber::registry()
        .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO));
    let guard = tracing::subscriber::set_default(subscriber);

    log::info!(target: "payments::gateway", "charged {} cents", 1250);
    log::warn!("retrying the card");
    log::error!(target: "payments::gateway", "gave up");
    log::debug!("not exported: below the layer's INFO filter");
    log::info!(target: "reqwest::connect", "not exported: the HTTP stack's own");
    let span = tracing::info_span!("settle");
    span.in_scope(|| log::info!("settled"));
    drop(span);
    drop(guard);

    let report = tokio::time::timeout(Duration::from_secs(30), telemetry.shutdown())
        .await
        .expect("bounded shutdown");
    assert_eq!(report.layer.logs_recorded, 4);
    let logs = server.logs();
    assert_eq!(logs.len(), 4, "{logs:?}");

    let charged = &by_message(&logs, "charged 1250 cents")["attributes"];
    assert_eq!(charged["level"], "INFO");
    assert_eq!(charged["target"], "payments::gateway");
    assert_eq!(charged["service.name"], "payments");
    // tracing-log's bookkeeping fields are not attributes.
    let keys: Vec<_> = charged.as_object().expect("object").keys().collect();
    assert!(keys.iter().all(|k| !k.starts_with("log.")), "{keys:?}");

    let retrying = &by_message(&logs, "retrying the card")["attributes"];
    assert_eq!(retrying["level"], "WARN");
    assert_eq!(retrying["target"], "log_bridge"); // the module, as log sets it
    assert_eq!(by_message(&logs, "gave up")["attributes"]["level"], "ERROR");

    // Inside a span, a log record carries the span's trace context.
    let settled = &by_message(&logs, "settled")["attributes"];
    let settle = &server.spans()[0];
    assert_eq!(settled["trace.id"], settle["trace.id"]);
    assert_eq!(settled["span.id"], settle["id"]);
}
