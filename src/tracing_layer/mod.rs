//! A [`tracing`] layer that exports spans and events to New Relic (feature
//! `tracing-layer`).
//!
//! [`NewRelicLayer`] plugs into a [`tracing_subscriber::Registry`]:
//!
//! * every **span**, when it closes, becomes a New Relic [`Span`]: a random
//!   16-hex-character id, the trace id of its nearest exported ancestor (a root
//!   span starts a new trace, or continues a remote one: see
//!   [below](#remote-parents-and-sampling)), `parent.id`, the tracing span's name, its
//!   duration from creation to close, the configured `service.name`, its target
//!   as `code.namespace`, and its fields as attributes;
//! * every **event** becomes a [`Log`]: the `message` field as the message, its
//!   level (`"INFO"`, ...) under `level`, its target under `target`, its other
//!   fields as attributes, the configured `service.name`, and, inside a span,
//!   that span's `trace.id` and `span.id` (New Relic's logs-in-context keys).
//!
//! The layer needs a subscriber that stores span data, such as
//! [`tracing_subscriber::registry()`]. Install it as the global default
//! (`.init()`) in an application: a default set with
//! [`tracing::subscriber::set_default`] covers only the current thread, not a
//! multi-thread runtime's workers.
//!
//! # Fields
//!
//! Field values keep their types: `i64`, `u64` and `i128`/`u128` become
//! integers (floats when they do not fit in `i64`), `f64` a float (NaN and
//! infinities, which the ingest APIs refuse, become the strings `"NaN"`,
//! `"inf"` and `"-inf"` instead of losing the whole item), `bool` a boolean,
//! `&str` a string, and anything recorded with `?` (Debug), `%` (Display) or as
//! a `&dyn Error` the string it formats to. Fields recorded later with
//! [`tracing::Span::record`] are added or updated. The layer's own keys
//! (`level`, `target`, `trace.id`, `span.id` on logs) win over fields of the
//! same name; on spans, `name`, `duration.ms` and `parent.id` are always the
//! span's own. A field named `service.name` is not exported: the service's
//! name is the layer's ([`NewRelicLayerBuilder::service_name`]), or the
//! batches' common block's, as with [`Telemetry`](crate::Telemetry).
//!
//! # Errors
//!
//! A span is flagged as failed (`error: true`, which New Relic's trace UIs
//! highlight) when
//! * it has a field named `error` whose value is `true`; any other non-boolean
//!   value (`error = %e`, `error = "timeout"`, `error = &e as &dyn Error`) also
//!   sets `error: true` and puts the value's text in `error.message`;
//! * or an event at `ERROR` level is recorded inside it (the innermost exported
//!   span around the event; its ancestors are not flagged): `error.message` is
//!   then the event's message, unless the span already had one.
//!
//! With [`NewRelicLayerBuilder::span_events`], events inside a span are also
//! attached to it as span events.
//!
//! An `error = false` field is kept as `error: false`.
//!
//! # Never blocking
//!
//! Layer callbacks run on the caller's thread, inside `tracing`'s macros, so
//! they never wait. The layer converts a closed span or an event and records
//! it straight into the [`SpanBatch`] or [`LogBatch`] when the batch's lock is
//! free, which it nearly always is (it is held only to push an item or to
//! swap the buffer out at a flush): no hop to another task, no wake-up. When
//! another recording or a flush holds the lock, the item goes to a bounded
//! channel instead (`try_send`), and a [`LayerWorker`], which you run on your
//! Tokio runtime ([`LayerWorker::spawn`] or [`LayerWorker::run`]), waits for
//! the lock and records it. Your [`Harvester`](crate::Harvester)s pick both
//! up from the batches.
//!
//! **When the channel is full** (the worker is not keeping up, or was never
//! started, while the batch's lock is busy), the span or log being exported
//! is dropped — the caller is never blocked and nothing already recorded or
//! queued is lost — and counted in
//! [`LayerStats::items_dropped_channel_full`]. The worker logs a warning (at most one
//! every ten seconds, under the target `newrelic_telemetry::tracing_layer`, which
//! this layer itself never exports) when it sees the count grow. Once the worker
//! has ended, what the layer exports is dropped and counted in
//! [`LayerStats::items_dropped_worker_gone`]. When a *batch* is full, neither
//! side waits: the batch refuses the item (counted in
//! [`LayerStats::items_dropped_by_batch`] and in the batch's
//! [`record_stats`](crate::batch::ItemBatch::record_stats)) and asks its harvester for
//! an early harvest, as it does when it holds 1 MiB. A refusal met
//! while the layer records at once is logged at the batch's next flush, not
//! when it happens: `tracing` dispatches no event from inside a callback. The channel holds [`DEFAULT_CHANNEL_CAPACITY`] items unless
//! told otherwise ([`NewRelicLayerBuilder::channel_capacity`]).
//!
//! # No feedback
//!
//! Sending telemetry produces `tracing` data of its own (this SDK's
//! diagnostics, the HTTP client's). Exporting it would make every harvest
//! produce telemetry about the previous one, so the layer never exports spans or
//! events whose target is, or is a module of, one of
//! [`DEFAULT_EXCLUDED_TARGETS`] (`newrelic_telemetry`, `reqwest`, `hyper`,
//! `hyper_util`, `h2`, `rustls`, `tokio`, ...), nor of the targets added with
//! [`NewRelicLayerBuilder::exclude_target`]. Other layers of the subscriber
//! still see them. A span whose target is excluded is skipped: spans inside it
//! hang from its nearest exported ancestor.
//!
//! # Filtering
//!
//! The layer exports whatever reaches it. Give it a per-layer filter with
//! [`Layer::with_filter`] (a
//! [`LevelFilter`](tracing_subscriber::filter::LevelFilter), a
//! [`filter_fn`](tracing_subscriber::filter::filter_fn), an `EnvFilter`, ...):
//! it decides what New Relic receives without changing what the other layers
//! see. A span the filter rejects is skipped: its children hang from the
//! nearest exported ancestor, and events inside it carry that ancestor's ids.
//!
//! # Remote parents and sampling
//!
//! A root span continues a trace started by another service when it is
//! created inside [`with_remote_parent`] (what the HTTP middleware of the
//! `tower` feature does with each request's `traceparent`), or after
//! [`SpanExt::set_parent`]: its trace id is the remote one (32 hex digits),
//! its `parent.id` the remote span, and it takes the remote sampling
//! decision. A new trace gets a random 32-hex-digit trace id and is sampled
//! at the layer's [`sample_ratio`](NewRelicLayerBuilder::sample_ratio)
//! (1.0 by default). The spans of an unsampled trace are not exported, are
//! counted in [`LayerStats::spans_unsampled`], and cost next to nothing; its
//! logs are still exported, with their `trace.id`. [`SpanExt::trace_context`]
//! and [`current_trace_context`] give the context to send with an outgoing
//! request, the sampling decision in its flags.
//!
//! # Names and kinds
//!
//! A `tracing` span's name is fixed where it is written; a field named
//! `otel.name` renames the exported span (as with `tracing-opentelemetry`),
//! and `otel.kind` (`"server"`, `"client"`, ...) becomes its `span.kind`.
//!
//! # The `log` facade
//!
//! With the `log` feature, records of the [`log`](https://docs.rs/log) crate
//! (`log::info!` in your dependencies) are exported as New Relic logs with
//! their level and target: install `LogTracer` (re-exported here) once in `main` (it turns
//! each record into a `tracing` event), and the layer reads the record's own
//! target and level (not `tracing-log`'s generic ones) and leaves out its
//! `log.*` bookkeeping fields. Records of excluded targets (`reqwest`,
//! `hyper`, ...) are never exported, like their `tracing` events.
//! `tracing-subscriber`'s `init()` installs the `LogTracer` already when its
//! `tracing-log` feature (a default one) is on.
//!
//! ```
//! use newrelic_telemetry::tracing_layer::{LogTracer, NewRelicLayer};
//! use newrelic_telemetry::LogBatch;
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once per process; INFO keeps `log::debug!` calls of dependencies cheap.
//! LogTracer::builder().with_max_level(log::LevelFilter::Info).init()?;
//! let logs = Arc::new(LogBatch::new());
//! let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
//! tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
//!     log::warn!(target: "payments::gateway", "card declined");
//! });
//!
//! let stop = CancellationToken::new();
//! stop.cancel();
//! worker.run(stop).await;
//! let (items, _) = logs.flush().await;
//! assert_eq!(items[0].message(), "card declined");
//! assert_eq!(items[0].attributes().get("level"), Some(&"WARN".into()));
//! assert_eq!(items[0].attributes().get("target"), Some(&"payments::gateway".into()));
//! # Ok(()) }
//! ```
//!
//! # With a `Telemetry`
//!
//! [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) builds the
//! layer for you, wired to the telemetry's span and log batches and service
//! name, and runs its worker; `Telemetry::shutdown` drains that worker before
//! closing the batches, and counts what the layer drops in the
//! [`TelemetryReport`](crate::TelemetryReport). The rest of this page is for
//! assembling the parts by hand.
//!
//! # Shutting down
//!
//! The worker ends when its [`CancellationToken`] is cancelled, or when the
//! layer is dropped (with its subscriber); in both cases it first records
//! everything already in the channel. Stop things in this order so that the
//! harvesters' final flush includes the last spans and logs:
//!
//! 1. cancel the worker's token (or drop the subscriber) and await the worker;
//! 2. then shut the harvesters down ([`Harvester::shutdown`](crate::Harvester::shutdown)).
//!
//! Give the worker its own token (or a child token you cancel first) rather
//! than the harvesters' token, so the harvesters are not already flushing while
//! the worker drains.
//!
//! # Example
//!
//! ```no_run
//! use newrelic_telemetry::tracing_layer::NewRelicLayer;
//! use newrelic_telemetry::{Harvester, LogBatch, LogClient, SpanBatch, SpanClient};
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//! use tracing_subscriber::filter::LevelFilter;
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = std::env::var("NEW_RELIC_API_KEY")?;
//! let spans = Arc::new(SpanBatch::new());
//! let logs = Arc::new(LogBatch::new());
//! let span_harvester = Harvester::spawn(spans.clone(), SpanClient::builder(&key).build()?);
//! let log_harvester = Harvester::spawn(logs.clone(), LogClient::builder(&key).build()?);
//!
//! let (layer, worker) = NewRelicLayer::builder()
//!     .spans(spans)
//!     .logs(logs)
//!     .service_name("checkout")
//!     .build();
//! let stats = layer.handle();
//! tracing_subscriber::registry()
//!     .with(layer.with_filter(LevelFilter::INFO))
//!     .init();
//! let stop_worker = CancellationToken::new();
//! let worker = worker.spawn(stop_worker.clone());
//!
//! {
//!     let _span = tracing::info_span!("charge", order.id = 1234).entered();
//!     tracing::info!(amount = 12.5, "card charged");
//! }
//!
//! // Shutdown: drain the layer's channel first, then flush and send.
//! stop_worker.cancel();
//! worker.await?;
//! span_harvester.shutdown().await;
//! log_harvester.shutdown().await;
//! println!("dropped by the layer: {}", stats.stats().items_dropped_channel_full);
//! # Ok(()) }
//! ```
//!
//! [`Span`]: crate::Span
//! [`Log`]: crate::Log
//! [`SpanBatch`]: crate::SpanBatch
//! [`LogBatch`]: crate::LogBatch
//! [`CancellationToken`]: tokio_util::sync::CancellationToken
//! [`Layer::with_filter`]: tracing_subscriber::Layer::with_filter

// One file per part; none of them uses anything from this file.
mod builder; // NewRelicLayerBuilder and the defaults it starts from
mod context; // remote parents (with_remote_parent, SpanExt) and a span's trace context
mod keys; // the attribute keys the layer writes, allocated once
mod layer; // NewRelicLayer: the `tracing` callbacks
mod span_store; // what a layer keeps per open span, in the span's extensions
mod stats; // counters, LayerStats and LayerHandle
mod visitor; // tracing fields to typed attributes
mod worker; // the channel and the LayerWorker that drains it into the batches

pub use builder::{DEFAULT_CHANNEL_CAPACITY, DEFAULT_EXCLUDED_TARGETS, NewRelicLayerBuilder};
pub use context::{SpanExt, current_trace_context, with_remote_parent};
pub use layer::{MAX_SPAN_EVENTS, NewRelicLayer};
pub(crate) use stats::LayerCounters;
pub use stats::{LayerHandle, LayerStats};
/// `tracing-log`'s bridge from the `log` facade (feature `log`): see
/// [the `log` facade](self#the-log-facade).
#[cfg(feature = "log")]
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
pub use tracing_log::LogTracer;
pub use worker::LayerWorker;
