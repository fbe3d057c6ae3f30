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

mod attributes;
mod batch;
mod budget;
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
    Batch, BatchItem, Counter, DEFAULT_CAPACITY, DEFAULT_IDLE_HARVESTS, DEFAULT_MAX_SERIES,
    EventBatch, Gauge, ItemBatch, ItemBatchBuilder, LogBatch, MetricBatch, MetricBatchBuilder,
    RecordStats, SpanBatch, SummaryHandle,
};
pub use budget::{DEFAULT_MEMORY_BUDGET, MemoryStats};
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
    DEFAULT_HARVEST_INTERVAL, DEFAULT_MAX_QUEUED_ITEMS, DEFAULT_SHUTDOWN_TIMEOUT, HarvestReport,
    Harvester, HarvesterBuilder, SHUTDOWN_SLACK,
};
pub use log::Log;
pub use metric::{CountMetric, GaugeMetric, Metric, MetricKind, Summary, SummaryMetric};
pub use span::{Span, SpanEvent};
pub use stats::DeliveryStats;
pub use telemetry::{Endpoints, Telemetry, TelemetryBuilder, TelemetryReport, env};
