//! The crate's guide is its README, included here so that its examples are
//! compiled and run as doc tests.
//!
//! Modules follow the architecture: data types ([`Metric`], [`Event`],
//! [`Log`], [`Span`]) and their [`Attributes`]; batches that record them
//! ([`MetricBatch`], [`EventBatch`], [`LogBatch`], [`SpanBatch`]); clients
//! that deliver them ([`Client`] and its [`RetryPolicy`]); the [`Harvester`]
//! that connects the two in the background; [`Telemetry`], which sets up all
//! four; and the error types.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
mod attributes;
mod batch;
mod budget;
mod client;
mod common;
mod counters;
mod error;
mod event;
mod harvester;
mod id;
#[cfg(feature = "local-endpoint")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-endpoint")))]
pub mod local;
mod log;
mod metric;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics_recorder;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod middleware;
mod signal;
mod span;
mod telemetry;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
// The local endpoint is the test server with nothing scripted.
#[cfg(all(feature = "local-endpoint", not(feature = "test-util")))]
#[allow(dead_code, unreachable_pub)]
mod test_util;
mod time;
pub mod trace_context;
#[cfg(feature = "tracing-layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
pub mod tracing_layer;
mod validate;

pub use api::{Api, Region};
pub use attributes::{AsAttributes, AsValueRef, Attributes, Value, ValueRef};
pub use batch::{
    Batch, BatchItem, Counter, DEFAULT_CAPACITY, DEFAULT_IDLE_HARVESTS, DEFAULT_MAX_SERIES,
    EventBatch, Gauge, ItemBatch, ItemBatchBuilder, LogBatch, MetricBatch, MetricBatchBuilder,
    RecordStats, SpanBatch, SummaryHandle,
};
pub use budget::{DEFAULT_MEMORY_BUDGET, MemoryStats};
pub use client::{
    AttemptFailure, Client, ClientBuilder, ConnectionError, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT, DeliveryStats, DropReason, EventClient, Events, KeyHeader, Kind, LogClient,
    Logs, MAX_PAYLOAD_BYTES, MetricClient, Metrics, PayloadOutcome, PayloadReport, RetryPolicy,
    SendError, SendReport, SpanClient, Spans, encode_payload,
};
pub use common::Common;
pub use error::{BuildError, ConfigError, RecordError};
pub use event::Event;
pub use harvester::{
    DEFAULT_HARVEST_INTERVAL, DEFAULT_MAX_QUEUED_ITEMS, DEFAULT_SHUTDOWN_TIMEOUT, HarvestReport,
    Harvester, HarvesterBuilder, PipelineStats, SHUTDOWN_SLACK,
};
pub use log::Log;
pub use metric::{
    CountMetric, GaugeMetric, Metric, MetricKind, MetricValue, Summary, SummaryMetric,
};
pub use signal::shutdown_signal;
pub use span::{Span, SpanEvent};
pub use telemetry::{
    AllApis, Endpoints, Telemetry, TelemetryBuilder, TelemetryReport, TelemetryStats, env,
};
pub use trace_context::{MAX_TRACESTATE_ENTRIES, TraceContext};
