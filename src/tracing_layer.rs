//! A [`tracing`] layer that exports spans and events to New Relic (feature
//! `tracing-layer`).
//!
//! [`NewRelicLayer`] plugs into a [`tracing_subscriber::Registry`]:
//!
//! * every **span**, when it closes, becomes a New Relic [`Span`]: a random
//!   16-hex-character id, the trace id of its nearest exported ancestor (a root
//!   span starts a new trace), `parent.id`, the tracing span's name, its
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
//! (`level`, `target`, `trace.id`, `span.id`, `service.name` on logs) win over
//! fields of the same name; on spans, `name`, `duration.ms`, `parent.id` and
//! `service.name` are always the span's own.
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
//! they never wait: the layer converts spans and events and hands them to a
//! bounded channel with `try_send`. A [`LayerWorker`], which you run on your
//! Tokio runtime ([`LayerWorker::spawn`] or [`LayerWorker::run`]), takes them
//! from the channel and records them into the [`SpanBatch`] and [`LogBatch`],
//! where your [`Harvester`](crate::Harvester)s pick them up.
//!
//! **When the channel is full** (the worker is not keeping up, or was never
//! started), the span or log being exported is dropped — the caller is never
//! blocked and nothing already queued is lost — and counted in
//! [`LayerStats::dropped_channel_full`]. The worker logs a warning (at most one
//! every ten seconds, under the target `newrelic_telemetry::tracing_layer`, which
//! this layer itself never exports) when it sees the count grow. Once the worker
//! has ended, what the layer exports is dropped and counted in
//! [`LayerStats::dropped_worker_gone`]. When a *batch* is full, the worker does
//! not wait either: the batch refuses the item (counted in
//! [`LayerStats::refused_by_batch`] and in the batch's
//! [`record_stats`](crate::ItemBatch::record_stats)) and asks its harvester for
//! an early harvest. The channel holds [`DEFAULT_CHANNEL_CAPACITY`] items unless
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
//! println!("dropped by the layer: {}", stats.stats().dropped_channel_full);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::attributes::{Attributes, Value};
use crate::batch::{LogBatch, SpanBatch};
use crate::log::Log;
use crate::span::{Span, SpanEvent};

/// Spans and logs the layer's channel holds unless told otherwise; see
/// [`NewRelicLayerBuilder::channel_capacity`].
///
/// ```
/// assert_eq!(newrelic_telemetry::tracing_layer::DEFAULT_CHANNEL_CAPACITY, 10_000);
/// ```
pub const DEFAULT_CHANNEL_CAPACITY: usize = 10_000;

/// Targets (crate or module paths) whose spans and events the layer never
/// exports: this SDK and the HTTP stack it sends with. A target matches when it
/// equals one of them or starts with one of them followed by `::`.
///
/// ```
/// use newrelic_telemetry::tracing_layer::DEFAULT_EXCLUDED_TARGETS;
///
/// assert!(DEFAULT_EXCLUDED_TARGETS.contains(&"newrelic_telemetry"));
/// assert!(DEFAULT_EXCLUDED_TARGETS.contains(&"reqwest"));
/// ```
pub const DEFAULT_EXCLUDED_TARGETS: &[&str] = &[
    "newrelic_telemetry",
    "reqwest",
    "hyper",
    "hyper_util",
    "hyper_rustls",
    "h2",
    "http_body_util",
    "rustls",
    "rustls_platform_verifier",
    "rustls_native_certs",
    "tokio_rustls",
    "webpki",
    "tokio",
    "tokio_util",
    "runtime",
    "tower",
    "want",
    "mio",
];

/// How many items the worker takes from the channel at a time.
const RECEIVE_CHUNK: usize = 256;

/// The least time between two of the worker's "items dropped" warnings.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What the layer hands to its worker.
enum Item {
    Span(Span),
    Log(Log),
}

/// The most span events one span carries; later ones are counted in
/// [`LayerStats::span_events_dropped`].
///
/// ```
/// assert_eq!(newrelic_telemetry::tracing_layer::MAX_SPAN_EVENTS, 100);
/// ```
pub const MAX_SPAN_EVENTS: usize = 100;

/// Counters shared by the layer, its worker and their handles.
#[derive(Debug, Default)]
struct Counters {
    dropped_channel_full: AtomicU64,
    dropped_worker_gone: AtomicU64,
    spans_recorded: AtomicU64,
    logs_recorded: AtomicU64,
    refused_by_batch: AtomicU64,
    span_events_dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> LayerStats {
        LayerStats {
            dropped_channel_full: self.dropped_channel_full.load(Ordering::Relaxed),
            dropped_worker_gone: self.dropped_worker_gone.load(Ordering::Relaxed),
            spans_recorded: self.spans_recorded.load(Ordering::Relaxed),
            logs_recorded: self.logs_recorded.load(Ordering::Relaxed),
            refused_by_batch: self.refused_by_batch.load(Ordering::Relaxed),
            span_events_dropped: self.span_events_dropped.load(Ordering::Relaxed),
        }
    }
}

/// What a [`NewRelicLayer`] and its [`LayerWorker`] did so far.
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::{LogBatch, SpanBatch};
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let logs = Arc::new(LogBatch::new());
/// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
///
/// let stop = CancellationToken::new();
/// stop.cancel(); // the worker records what is queued, then ends
/// let stats = worker.run(stop).await;
/// assert_eq!(stats.logs_recorded, 1);
/// assert_eq!(stats.dropped_channel_full, 0);
/// assert_eq!(logs.len().await, 1);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Spans and logs dropped because the layer's channel was full.
    pub dropped_channel_full: u64,
    /// Spans and logs dropped because the worker had ended (or was dropped
    /// without running).
    pub dropped_worker_gone: u64,
    /// Spans the worker recorded into the span batch.
    pub spans_recorded: u64,
    /// Logs the worker recorded into the log batch.
    pub logs_recorded: u64,
    /// Spans and logs a batch refused: it was full, or the item broke a rule
    /// of the API (the batch's [`record_stats`](crate::ItemBatch::record_stats)
    /// says which).
    pub refused_by_batch: u64,
    /// Span events not attached because their span already had
    /// [`MAX_SPAN_EVENTS`] (a long-lived span would otherwise grow without
    /// bound, and end up too large to send).
    pub span_events_dropped: u64,
}

/// A cheap, cloneable handle to a layer's [`LayerStats`], usable after the
/// layer has been moved into a subscriber.
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::LogBatch;
/// use std::sync::Arc;
///
/// let (layer, _worker) = NewRelicLayer::builder().logs(Arc::new(LogBatch::new())).build();
/// let handle = layer.handle();
/// assert_eq!(handle.stats().dropped_channel_full, 0);
/// ```
#[derive(Clone, Debug)]
pub struct LayerHandle {
    counters: Arc<Counters>,
}

impl LayerHandle {
    /// The counters so far.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::LogBatch;
    /// use std::sync::Arc;
    /// use tracing_subscriber::prelude::*;
    ///
    /// let (layer, _worker) = NewRelicLayer::builder()
    ///     .logs(Arc::new(LogBatch::new()))
    ///     .channel_capacity(1)
    ///     .build();
    /// let handle = layer.handle();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info!("queued");
    ///     tracing::info!("dropped: the channel holds one item and nobody drains it");
    /// });
    /// assert_eq!(handle.stats().dropped_channel_full, 1);
    /// ```
    pub fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }
}

/// Keys and values the layer inserts on every item, allocated once.
#[derive(Debug)]
struct Keys {
    level: Arc<str>,
    target: Arc<str>,
    trace_id: Arc<str>,
    span_id: Arc<str>,
    service_name: Arc<str>,
    code_namespace: Arc<str>,
    error: Arc<str>,
    error_message: Arc<str>,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`.
    levels: [Value; 5],
}

impl Keys {
    fn new() -> Self {
        Keys {
            level: Arc::from("level"),
            target: Arc::from("target"),
            trace_id: Arc::from("trace.id"),
            span_id: Arc::from("span.id"),
            service_name: Arc::from("service.name"),
            code_namespace: Arc::from("code.namespace"),
            error: Arc::from("error"),
            error_message: Arc::from("error.message"),
            levels: [
                Value::from("TRACE"),
                Value::from("DEBUG"),
                Value::from("INFO"),
                Value::from("WARN"),
                Value::from("ERROR"),
            ],
        }
    }

    fn level(&self, level: &Level) -> Value {
        let i = match *level {
            Level::TRACE => 0,
            Level::DEBUG => 1,
            Level::INFO => 2,
            Level::WARN => 3,
            Level::ERROR => 4,
        };
        self.levels[i].clone()
    }
}

/// A `tracing` layer that exports closed spans as New Relic spans and events as
/// New Relic logs. See the [module documentation](self) for what it exports,
/// how, and what happens when its channel is full.
///
/// Build it with [`NewRelicLayer::builder`], which also returns the
/// [`LayerWorker`] to run.
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::{LogBatch, SpanBatch};
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::filter::LevelFilter;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let spans = Arc::new(SpanBatch::new());
/// let logs = Arc::new(LogBatch::new());
/// let (layer, worker) = NewRelicLayer::builder()
///     .spans(spans.clone())
///     .logs(logs.clone())
///     .service_name("checkout")
///     .build();
/// let worker = worker.spawn(CancellationToken::new());
///
/// let subscriber = tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO));
/// tracing::subscriber::with_default(subscriber, || {
///     let _span = tracing::info_span!("charge", order.id = 1234).entered();
///     tracing::info!(amount = 12.5, "card charged");
///     tracing::debug!("not exported: below the layer's filter");
/// });
///
/// // The subscriber (and the layer in it) is gone: the worker drains and ends.
/// let stats = worker.await?;
/// assert_eq!((stats.spans_recorded, stats.logs_recorded), (1, 1));
/// let (logs, _) = logs.flush().await;
/// let (spans, _) = spans.flush().await;
/// assert_eq!(logs[0].message(), "card charged");
/// assert_eq!(logs[0].attributes().get("span.id"), Some(&spans[0].id().into()));
/// # Ok(()) }
/// ```
pub struct NewRelicLayer {
    id: u64,
    sender: mpsc::Sender<Item>,
    export_spans: bool,
    export_logs: bool,
    span_events: bool,
    service_name: Option<Arc<str>>,
    excluded: Box<[Cow<'static, str>]>,
    keys: Keys,
    counters: Arc<Counters>,
}

impl fmt::Debug for NewRelicLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRelicLayer")
            .field("export_spans", &self.export_spans)
            .field("export_logs", &self.export_logs)
            .field("span_events", &self.span_events)
            .field("service_name", &self.service_name)
            .field("excluded", &self.excluded)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Configures a [`NewRelicLayer`] and its [`LayerWorker`].
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::SpanBatch;
/// use std::sync::Arc;
///
/// let (layer, worker) = NewRelicLayer::builder()
///     .spans(Arc::new(SpanBatch::new()))
///     .service_name("billing")
///     .channel_capacity(50_000)
///     .span_events(true)
///     .exclude_target("my_app::noisy")
///     .build();
/// ```
#[derive(Clone)]
pub struct NewRelicLayerBuilder {
    spans: Option<Arc<SpanBatch>>,
    logs: Option<Arc<LogBatch>>,
    service_name: Option<Arc<str>>,
    capacity: usize,
    span_events: bool,
    excluded: Vec<Cow<'static, str>>,
}

impl fmt::Debug for NewRelicLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRelicLayerBuilder")
            .field("spans", &self.spans.is_some())
            .field("logs", &self.logs.is_some())
            .field("service_name", &self.service_name)
            .field("capacity", &self.capacity)
            .field("span_events", &self.span_events)
            .field("excluded", &self.excluded)
            .finish()
    }
}

impl NewRelicLayer {
    /// A builder for a layer. Give it a [`SpanBatch`] to export spans, a
    /// [`LogBatch`] to export events as logs, or both; without either the
    /// layer exports nothing.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    ///
    /// let (layer, worker) = NewRelicLayer::builder()
    ///     .spans(Arc::new(SpanBatch::new()))
    ///     .logs(Arc::new(LogBatch::new()))
    ///     .build();
    /// assert_eq!(layer.handle().stats(), worker.handle().stats());
    /// ```
    pub fn builder() -> NewRelicLayerBuilder {
        NewRelicLayerBuilder {
            spans: None,
            logs: None,
            service_name: None,
            capacity: DEFAULT_CHANNEL_CAPACITY,
            span_events: false,
            excluded: DEFAULT_EXCLUDED_TARGETS
                .iter()
                .map(|t| Cow::Borrowed(*t))
                .collect(),
        }
    }

    /// A handle to the layer's counters, to keep before the layer is moved
    /// into a subscriber.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::SpanBatch;
    /// use std::sync::Arc;
    ///
    /// let (layer, _worker) = NewRelicLayer::builder().spans(Arc::new(SpanBatch::new())).build();
    /// let handle = layer.handle(); // still usable after `layer` moves into a subscriber
    /// assert_eq!(handle.stats().spans_recorded, 0);
    /// ```
    pub fn handle(&self) -> LayerHandle {
        LayerHandle {
            counters: self.counters.clone(),
        }
    }

    /// Whether `target` is one the layer never exports.
    fn is_excluded(&self, target: &str) -> bool {
        self.excluded.iter().any(|prefix| {
            target
                .strip_prefix(prefix.as_ref())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
    }

    /// Hands `item` to the worker without waiting; drops and counts it when
    /// the channel is full or the worker is gone.
    fn send(&self, item: Item) {
        match self.sender.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters
                    .dropped_channel_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {
                self.counters
                    .dropped_worker_gone
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl NewRelicLayerBuilder {
    /// Exports closed spans into `batch`.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spans = Arc::new(SpanBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).build();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info_span!("checkout", order.id = 7).in_scope(|| {});
    /// });
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel(); // the worker records what is queued, then ends
    /// let stats = worker.run(stop).await;
    /// assert_eq!(stats.spans_recorded, 1);
    /// let (items, _) = spans.flush().await;
    /// assert_eq!(items[0].name(), "checkout");
    /// assert_eq!(items[0].attributes().get("order.id"), Some(&7.into()));
    /// # }
    /// ```
    pub fn spans(mut self, batch: Arc<SpanBatch>) -> Self {
        self.spans = Some(batch);
        self
    }

    /// Exports events, as logs, into `batch`.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = Arc::new(LogBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || tracing::warn!(user = "alice", "login failed"));
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel(); // the worker records what is queued, then ends
    /// let stats = worker.run(stop).await;
    /// let (items, _) = logs.flush().await;
    /// assert_eq!(items[0].message(), "login failed");
    /// assert_eq!(items[0].attributes().get("level"), Some(&"WARN".into()));
    /// assert_eq!(items[0].attributes().get("user"), Some(&"alice".into()));
    /// # }
    /// ```
    pub fn logs(mut self, batch: Arc<LogBatch>) -> Self {
        self.logs = Some(batch);
        self
    }

    /// The `service.name` every span and log carries (none by default; it can
    /// also come from the batches' common attributes).
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = Arc::new(LogBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).service_name("billing").build();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || tracing::info!("invoice sent"));
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel(); // the worker records what is queued, then ends
    /// let stats = worker.run(stop).await;
    /// let (items, _) = logs.flush().await;
    /// assert_eq!(items[0].attributes().get("service.name"), Some(&"billing".into()));
    /// # }
    /// ```
    pub fn service_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// How many spans and logs may wait for the worker (default
    /// [`DEFAULT_CHANNEL_CAPACITY`], at least 1). When that many wait, new ones
    /// are dropped and counted in [`LayerStats::dropped_channel_full`].
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::LogBatch;
    /// use std::sync::Arc;
    ///
    /// let (layer, worker) = NewRelicLayer::builder()
    ///     .logs(Arc::new(LogBatch::new()))
    ///     .channel_capacity(100_000)
    ///     .build();
    /// # drop((layer, worker));
    /// ```
    pub fn channel_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Also records every event inside an exported span as a span event of
    /// that span (named by the event's message, with `level`, `target` and the
    /// event's fields as attributes), up to [`MAX_SPAN_EVENTS`] per span. Off
    /// by default; events become logs either way when a log batch is given.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spans = Arc::new(SpanBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).span_events(true).build();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info_span!("fetch").in_scope(|| tracing::info!("cache miss"));
    /// });
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel(); // the worker records what is queued, then ends
    /// let stats = worker.run(stop).await;
    /// let (items, _) = spans.flush().await;
    /// assert_eq!(items[0].events()[0].name(), "cache miss");
    /// # }
    /// ```
    pub fn span_events(mut self, enabled: bool) -> Self {
        self.span_events = enabled;
        self
    }

    /// Never exports spans or events whose target is `target` or one of its
    /// modules (`target::...`), on top of [`DEFAULT_EXCLUDED_TARGETS`].
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = Arc::new(LogBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).exclude_target("my_app::db").build();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info!(target: "my_app::db::pool", "not exported");
    ///     tracing::info!(target: "my_app::api", "exported");
    /// });
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel(); // the worker records what is queued, then ends
    /// let stats = worker.run(stop).await;
    /// assert_eq!(stats.logs_recorded, 1);
    /// assert_eq!(logs.flush().await.0[0].message(), "exported");
    /// # }
    /// ```
    pub fn exclude_target(mut self, target: impl Into<Cow<'static, str>>) -> Self {
        self.excluded.push(target.into());
        self
    }

    /// Builds the layer and the worker that moves what it exports into the
    /// batches. Run the worker on a Tokio runtime ([`LayerWorker::spawn`] or
    /// [`LayerWorker::run`]); the layer itself needs no runtime.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::LogBatch;
    /// use std::sync::Arc;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (layer, worker) = NewRelicLayer::builder().logs(Arc::new(LogBatch::new())).build();
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// let worker = worker.spawn(stop.clone());
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
    /// stop.cancel();
    /// assert_eq!(worker.await.unwrap().logs_recorded, 1);
    /// # }
    /// ```
    pub fn build(self) -> (NewRelicLayer, LayerWorker) {
        let (sender, receiver) = mpsc::channel(self.capacity);
        let counters = Arc::new(Counters::default());
        let layer = NewRelicLayer {
            id: NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed),
            sender,
            export_spans: self.spans.is_some(),
            export_logs: self.logs.is_some(),
            span_events: self.span_events && self.spans.is_some(),
            service_name: self.service_name,
            excluded: self.excluded.into_boxed_slice(),
            keys: Keys::new(),
            counters: counters.clone(),
        };
        let worker = LayerWorker {
            receiver,
            spans: self.spans,
            logs: self.logs,
            counters,
        };
        (layer, worker)
    }
}

/// Moves what a [`NewRelicLayer`] exports from its channel into the batches.
///
/// It ends when its token is cancelled or when the layer is dropped, after
/// recording everything already in the channel; see the
/// [module documentation](self#shutting-down) for the shutdown order.
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::LogBatch;
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let logs = Arc::new(LogBatch::new());
/// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
/// let stop = CancellationToken::new();
/// let worker = worker.spawn(stop.clone());
///
/// let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
/// tracing::warn!(disk = "/var", "disk almost full");
///
/// stop.cancel(); // drains the channel, then ends
/// let stats = worker.await?;
/// assert_eq!(stats.logs_recorded, 1);
/// assert_eq!(logs.len().await, 1);
/// # Ok(()) }
/// ```
#[must_use = "the layer exports nothing until its worker runs"]
pub struct LayerWorker {
    receiver: mpsc::Receiver<Item>,
    spans: Option<Arc<SpanBatch>>,
    logs: Option<Arc<LogBatch>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for LayerWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerWorker")
            .field("queued", &self.receiver.len())
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl LayerWorker {
    /// A handle to the layer's counters.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::LogBatch;
    /// use std::sync::Arc;
    ///
    /// let (_layer, worker) = NewRelicLayer::builder().logs(Arc::new(LogBatch::new())).build();
    /// let handle = worker.handle(); // still usable after `worker` is spawned
    /// assert_eq!(handle.stats().logs_recorded, 0);
    /// ```
    pub fn handle(&self) -> LayerHandle {
        LayerHandle {
            counters: self.counters.clone(),
        }
    }

    /// Records what the layer exports into the batches until `token` is
    /// cancelled or the layer is dropped; then records what is still in the
    /// channel, and returns the counters. Later exports are dropped and
    /// counted in [`LayerStats::dropped_worker_gone`].
    ///
    /// Dropping the future instead (aborting its task, shutting its runtime
    /// down) ends it without that last drain.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = Arc::new(LogBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
    /// let stop = CancellationToken::new();
    /// let running = tokio::spawn(worker.run(stop.clone()));
    ///
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
    /// stop.cancel();
    /// assert_eq!(running.await.unwrap().logs_recorded, 1);
    /// assert_eq!(logs.len().await, 1);
    /// # }
    /// ```
    pub async fn run(mut self, token: CancellationToken) -> LayerStats {
        let mut buffer = Vec::with_capacity(RECEIVE_CHUNK);
        let mut warned = DropWarnings::default();
        loop {
            tokio::select! {
                biased;
                () = token.cancelled() => break,
                received = self.receiver.recv_many(&mut buffer, RECEIVE_CHUNK) => {
                    if received == 0 {
                        // Every sender is gone (the layer was dropped) and the
                        // channel is empty.
                        warned.check(&self.counters, true);
                        return self.counters.snapshot();
                    }
                    self.record_all(&mut buffer).await;
                    warned.check(&self.counters, false);
                }
            }
        }
        // Cancelled: refuse new items, record those already queued.
        self.receiver.close();
        while self.receiver.recv_many(&mut buffer, RECEIVE_CHUNK).await > 0 {
            self.record_all(&mut buffer).await;
        }
        warned.check(&self.counters, true);
        self.counters.snapshot()
    }

    /// Spawns [`run`](Self::run) on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::{LogBatch, SpanBatch};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spans = Arc::new(SpanBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).build();
    /// let stop = CancellationToken::new();
    /// let worker = worker.spawn(stop.clone());
    ///
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || tracing::info_span!("work").in_scope(|| {}));
    /// stop.cancel(); // drain, then end
    /// assert_eq!(worker.await.unwrap().spans_recorded, 1);
    /// # }
    /// ```
    pub fn spawn(self, token: CancellationToken) -> JoinHandle<LayerStats> {
        tokio::spawn(self.run(token))
    }

    async fn record_all(&self, buffer: &mut Vec<Item>) {
        for item in buffer.drain(..) {
            let (recorded, counter) = match item {
                Item::Span(span) => match &self.spans {
                    Some(batch) => (batch.record(span).await, &self.counters.spans_recorded),
                    None => continue,
                },
                Item::Log(log) => match &self.logs {
                    Some(batch) => (batch.record(log).await, &self.counters.logs_recorded),
                    None => continue,
                },
            };
            let counter = if recorded.is_ok() {
                counter
            } else {
                &self.counters.refused_by_batch
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Rate-limits the worker's warnings about items dropped on a full channel.
#[derive(Default)]
struct DropWarnings {
    reported: u64,
    last: Option<std::time::Instant>,
}

impl DropWarnings {
    fn check(&mut self, counters: &Counters, last_chance: bool) {
        let dropped = counters.dropped_channel_full.load(Ordering::Relaxed);
        if dropped == self.reported {
            return;
        }
        let due = self
            .last
            .is_none_or(|at| at.elapsed() >= DROP_WARNING_INTERVAL);
        if due || last_chance {
            tracing::warn!(
                dropped = dropped - self.reported,
                total = dropped,
                "tracing layer channel full: spans or logs dropped"
            );
            self.reported = dropped;
            self.last = Some(std::time::Instant::now());
        }
    }
}

/// Gives every layer its own key in span extensions, so that several layers
/// (for several accounts, say) can share a subscriber.
static NEXT_LAYER_ID: AtomicU64 = AtomicU64::new(1);

/// What the layers keep in an exported span's extensions: one [`SpanData`] per
/// layer, the first inline (no allocation for the usual single layer).
struct Exported {
    first: (u64, SpanData),
    more: Vec<(u64, SpanData)>,
}

impl Exported {
    fn get(&self, layer: u64) -> Option<&SpanData> {
        if self.first.0 == layer {
            return Some(&self.first.1);
        }
        self.more.iter().find(|(l, _)| *l == layer).map(|(_, d)| d)
    }

    fn get_mut(&mut self, layer: u64) -> Option<&mut SpanData> {
        if self.first.0 == layer {
            return Some(&mut self.first.1);
        }
        self.more
            .iter_mut()
            .find(|(l, _)| *l == layer)
            .map(|(_, d)| d)
    }

    /// Takes the layer's data out; returns it and whether nothing is left.
    fn take(mut self, layer: u64) -> (Option<SpanData>, Option<Exported>) {
        if self.first.0 == layer {
            let rest = self.more.pop().map(|first| Exported {
                first,
                more: self.more,
            });
            return (Some(self.first.1), rest);
        }
        let found = self.more.iter().position(|(l, _)| *l == layer);
        let data = found.map(|i| self.more.swap_remove(i).1);
        (data, Some(self))
    }
}

/// What a layer keeps for one exported span.
struct SpanData {
    /// The New Relic span being built (its attributes are the span's fields).
    span: Span,
    /// The ids as shared strings, cloned cheaply into logs and child spans.
    trace_id: Arc<str>,
    span_id: Arc<str>,
}

/// Records a tracing field set into attributes, keeping value types.
struct FieldVisitor<'a> {
    attributes: &'a mut Attributes,
    keys: &'a Keys,
    /// Whether the `message` field is the log's message (events) or an
    /// ordinary attribute (spans).
    message: Option<String>,
    capture_message: bool,
    /// Whether a field named `error` flags the span (spans only).
    error_field: bool,
}

impl<'a> FieldVisitor<'a> {
    fn for_span(attributes: &'a mut Attributes, keys: &'a Keys) -> Self {
        FieldVisitor {
            attributes,
            keys,
            message: None,
            capture_message: false,
            error_field: true,
        }
    }

    fn for_event(attributes: &'a mut Attributes, keys: &'a Keys) -> Self {
        FieldVisitor {
            attributes,
            keys,
            message: None,
            capture_message: true,
            error_field: false,
        }
    }

    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.capture_message && name == "message" {
            self.message = Some(match value {
                Value::String(s) => String::from(&*s),
                other => other.to_string(),
            });
        } else if self.error_field && name == "error" {
            match value {
                Value::Bool(flag) => {
                    self.attributes.insert(self.keys.error.clone(), flag);
                }
                other => {
                    self.attributes.insert(self.keys.error.clone(), true);
                    let message = match other {
                        Value::String(s) => Value::String(s),
                        other => Value::from(other.to_string()),
                    };
                    self.attributes
                        .insert(self.keys.error_message.clone(), message);
                }
            }
        } else {
            self.attributes.insert(name, value);
        }
    }
}

/// A float as an attribute value; non-finite floats (which the ingest APIs
/// refuse) become their text.
fn float_value(value: f64) -> Value {
    if value.is_finite() {
        Value::Float(value)
    } else {
        Value::from(value.to_string())
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, float_value(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Value::from(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        // Writing to a String only fails if the Debug impl itself errors.
        let _ = write!(text, "{value:?}");
        self.put(field, Value::from(text));
    }
}

/// The nearest span, from `span` up, that layer `layer` exports.
fn nearest_exported<'a, S>(span: SpanRef<'a, S>, layer: u64) -> Option<SpanRef<'a, S>>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    span.scope().find(|s| {
        s.extensions()
            .get::<Exported>()
            .is_some_and(|e| e.get(layer).is_some())
    })
}

impl<S> Layer<S> for NewRelicLayer
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if !(self.export_spans || self.export_logs) {
            return;
        }
        let metadata = attrs.metadata();
        if self.is_excluded(metadata.target()) {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|p| nearest_exported(p, self.id))
            .and_then(|p| {
                p.extensions()
                    .get::<Exported>()
                    .and_then(|e| e.get(self.id))
                    .map(|d| (d.trace_id.clone(), d.span_id.clone()))
            });

        let mut nr = Span::new(metadata.name());
        if let Some((trace_id, parent_id)) = parent {
            nr = nr.with_trace_id(&*trace_id).with_parent_id(&*parent_id);
        }
        if let Some(service) = &self.service_name {
            nr = nr.with_service_name(service.clone());
        }
        if self.export_spans {
            let attributes = nr.attributes_mut();
            attributes.insert(self.keys.code_namespace.clone(), metadata.target());
            attrs.record(&mut FieldVisitor::for_span(attributes, &self.keys));
        }
        let data = SpanData {
            trace_id: Arc::from(nr.trace_id()),
            span_id: Arc::from(nr.id()),
            span: nr,
        };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<Exported>() {
            Some(exported) => exported.more.push((self.id, data)),
            None => extensions.insert(Exported {
                first: (self.id, data),
                more: Vec::new(),
            }),
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if !self.export_spans {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let data = extensions
            .get_mut::<Exported>()
            .and_then(|e| e.get_mut(self.id));
        if let Some(data) = data {
            values.record(&mut FieldVisitor::for_span(
                data.span.attributes_mut(),
                &self.keys,
            ));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if !(self.export_spans || self.export_logs) {
            return;
        }
        let metadata = event.metadata();
        if self.is_excluded(metadata.target()) {
            return;
        }
        let is_error = *metadata.level() == Level::ERROR;
        let in_span = ctx
            .event_span(event)
            .and_then(|s| nearest_exported(s, self.id));
        if !self.export_logs && (in_span.is_none() || !(is_error || self.span_events)) {
            return;
        }

        let mut fields = Attributes::with_capacity(metadata.fields().len() + 6);
        let mut visitor = FieldVisitor::for_event(&mut fields, &self.keys);
        event.record(&mut visitor);
        let message = visitor.message.take().unwrap_or_default();

        let mut ids = None;
        if let Some(span) = &in_span {
            let mut extensions = span.extensions_mut();
            let data = extensions
                .get_mut::<Exported>()
                .and_then(|e| e.get_mut(self.id));
            if let Some(data) = data {
                ids = Some((data.trace_id.clone(), data.span_id.clone()));
                if self.export_spans && is_error {
                    let attributes = data.span.attributes_mut();
                    attributes.insert(self.keys.error.clone(), true);
                    if !attributes.contains_key(&self.keys.error_message) {
                        attributes.insert(self.keys.error_message.clone(), message.as_str());
                    }
                }
                if self.span_events && data.span.events().len() >= MAX_SPAN_EVENTS {
                    self.counters
                        .span_events_dropped
                        .fetch_add(1, Ordering::Relaxed);
                } else if self.span_events {
                    let name = if message.is_empty() {
                        metadata.name()
                    } else {
                        message.as_str()
                    };
                    let mut span_event = SpanEvent::new(name);
                    let attributes = span_event.attributes_mut();
                    for (key, value) in fields.pairs() {
                        attributes.insert(key.clone(), value.clone());
                    }
                    attributes.insert(self.keys.level.clone(), self.keys.level(metadata.level()));
                    attributes.insert(self.keys.target.clone(), metadata.target());
                    data.span.add_event(span_event);
                }
            }
        }

        if !self.export_logs {
            return;
        }
        fields.insert(self.keys.level.clone(), self.keys.level(metadata.level()));
        fields.insert(self.keys.target.clone(), metadata.target());
        if let Some((trace_id, span_id)) = ids {
            fields.insert(self.keys.trace_id.clone(), Value::String(trace_id));
            fields.insert(self.keys.span_id.clone(), Value::String(span_id));
        }
        if let Some(service) = &self.service_name {
            fields.insert(
                self.keys.service_name.clone(),
                Value::String(service.clone()),
            );
        }
        self.send(Item::Log(Log::new(message).with_attributes(fields)));
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if !self.export_spans {
            return;
        }
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let data = {
            let mut extensions = span.extensions_mut();
            let (data, rest) = match extensions.remove::<Exported>() {
                Some(exported) => exported.take(self.id),
                None => (None, None),
            };
            if let Some(rest) = rest {
                extensions.insert(rest);
            }
            data
        };
        if let Some(data) = data {
            self.send(Item::Span(data.span.finish()));
        }
    }
}
