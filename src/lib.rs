//! The crate's guide is its README, included here so that its examples are
//! compiled and run as doc tests.
//!
//! The crate root holds what a service uses every day: [`Telemetry`], the
//! data types ([`Metric`], [`Event`], [`Log`], [`Span`]) and their
//! [`Attributes`], the batches ([`MetricBatch`] and its bound handles,
//! [`EventBatch`], [`LogBatch`], [`SpanBatch`]), the clients
//! ([`MetricClient`] and its siblings) and the errors. Each concept's whole
//! surface lives in its module: [`batch`] (builders, limits, record and
//! memory counters), [`client`] (the generic client, its builder, reports,
//! drop reasons and delivery counters), [`harvester`] (its builder, report
//! and defaults), [`trace_context`], [`distribution`] (the exponential
//! histogram that distribution metrics will carry), and behind features
//! [`tracing_layer`] (a default one), `middleware`, `local` and `test_util`.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
mod attributes;
pub mod batch;
mod budget;
pub mod client;
mod common;
mod counters;
pub mod distribution;
mod error;
mod event;
pub mod harvester;
mod id;
#[cfg(feature = "local-endpoint")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-endpoint")))]
pub mod local;
mod log;
mod metric;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics_recorder;
#[cfg(any(feature = "tower", feature = "actix-web"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tower", feature = "actix-web"))))]
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

pub use api::{Api, ParseRegionError, Region};
pub use attributes::{AsAttributes, AsValueRef, Attributes, Value, ValueRef};
pub use batch::{
    CounterHandle, DistributionHandle, EventBatch, GaugeHandle, HistogramKind, LogBatch,
    MetricBatch, SpanBatch, SummaryHandle,
};
pub use client::{EventClient, LogClient, MetricClient, RetryPolicy, SendError, SpanClient};
pub use common::Common;
pub use error::{BuildError, ConfigError, RecordError};
pub use event::Event;
pub use harvester::Harvester;
pub use log::Log;
pub use metric::{
    CountMetric, GaugeMetric, Metric, MetricKind, MetricValue, Summary, SummaryMetric,
};
pub use signal::shutdown_signal;
pub use span::{Span, SpanEvent};
pub use telemetry::{Endpoints, Telemetry, TelemetryBuilder, TelemetryReport, TelemetryStats, env};
