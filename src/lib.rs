//! An async-first, Tokio-native New Relic Telemetry SDK.
//!
//! Record metrics, events, logs and spans on your request path; a background
//! [`Harvester`] ships them to New Relic's ingest APIs, gzipped, with bounded
//! retries, and sends what is still buffered when it is stopped.
//!
//! ```no_run
//! use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = CancellationToken::new();
//! let metrics = Arc::new(MetricBatch::new());
//! let client = MetricClient::builder(std::env::var("NEW_RELIC_API_KEY")?).build()?;
//! let harvester = Harvester::builder(metrics.clone(), client)
//!     .cancellation_token(shutdown.clone())
//!     .spawn();
//!
//! // On the request path: no allocation when the series exists.
//! metrics.record_count("http.requests", 1.0, [("route", "/checkout")]).await?;
//!
//! // On SIGTERM: stop, flush, send, and learn how it went.
//! shutdown.cancel();
//! let report = harvester.join().await;
//! println!("sent {} metrics", report.delivery.items_sent);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod attributes;
mod batch;
mod client;
mod common;
mod error;
mod event;
mod harvester;
mod id;
mod log;
mod metric;
mod span;
mod stats;
mod telemetry;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
mod time;
#[cfg(feature = "tracing-layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
pub mod tracing_layer;
mod validate;

pub use attributes::{AsAttributes, AsValueRef, Attributes, Value, ValueRef};
pub use batch::{
    Batch, BatchItem, DEFAULT_CAPACITY, DEFAULT_MAX_SERIES, EventBatch, ItemBatch,
    ItemBatchBuilder, LogBatch, MetricBatch, MetricBatchBuilder, RecordStats, SpanBatch,
};
pub use client::{
    AttemptFailure, Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, DropReason,
    EventClient, Events, KeyHeader, Kind, LogClient, Logs, MAX_PAYLOAD_BYTES, MetricClient,
    Metrics, PayloadOutcome, PayloadReport, Region, RetryPolicy, SendReport, SpanClient, Spans,
    encode_payload,
};
pub use common::Common;
pub use error::{BuildError, ConfigError, RecordError, SendError};
pub use event::Event;
pub use harvester::{
    DEFAULT_HARVEST_INTERVAL, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_ITEMS,
    DEFAULT_SHUTDOWN_TIMEOUT, HarvestReport, Harvester, HarvesterBuilder,
};
pub use log::Log;
pub use metric::{CountMetric, GaugeMetric, Metric, MetricKind, Summary, SummaryMetric};
pub use span::{Span, SpanEvent};
pub use stats::DeliveryStats;
pub use telemetry::{Telemetry, TelemetryBuilder, TelemetryReport, env};
