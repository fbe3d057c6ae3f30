//! [`NewRelicLayerBuilder`]: what the layer exports, where to, and how much
//! it may queue; `build()` wires the layer to its worker.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::layer::{NewRelicLayer, Settings};
use super::stats::LayerCounters;
use super::worker::{self, LayerWorker};
use crate::batch::{LogBatch, SpanBatch};

/// Spans and logs the layer's channel holds unless told otherwise (10,000).
/// The channel carries only what could not be recorded at once because its
/// batch's lock was taken (by another recording or a flush); at about a
/// kilobyte each, room for several megabytes while the worker catches up.
/// Past it, new items are dropped and counted; see
/// [`NewRelicLayerBuilder::channel_capacity`].
pub const DEFAULT_CHANNEL_CAPACITY: usize = 10_000;

/// Targets (crate or module paths) whose spans and events the layer never
/// exports: this SDK and the HTTP stack it sends with. A target matches when it
/// equals one of them or starts with one of them followed by `::`.
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::LogBatch;
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let logs = Arc::new(LogBatch::new());
/// let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(target: "reqwest::connect", "not exported: the HTTP stack");
///     tracing::info!(target: "newrelic_telemetry::harvester", "not exported: the SDK");
///     tracing::info!(target: "reqwest_like::app", "exported: only whole path segments match");
/// });
///
/// let stop = CancellationToken::new();
/// stop.cancel(); // the worker records what is queued, then ends
/// assert_eq!(worker.run(stop).await.logs_recorded, 1);
/// assert_eq!(logs.flush().await.0[0].message(), "exported: only whole path segments match");
/// # }
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

/// Configures a [`NewRelicLayer`] and its [`LayerWorker`].
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::SpanBatch;
/// use std::sync::Arc;
///
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let spans = Arc::new(SpanBatch::new());
/// let (layer, worker) = NewRelicLayer::builder()
///     .spans(spans.clone())
///     .service_name("billing")
///     .channel_capacity(50_000)
///     .span_events(true)
///     .exclude_target("my_app::noisy")
///     .build();
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     tracing::info_span!("invoice").in_scope(|| tracing::info!("sent"));
///     tracing::info_span!(target: "my_app::noisy::poll", "tick").in_scope(|| {});
/// });
/// let stop = CancellationToken::new();
/// stop.cancel(); // the worker drains what was sent, then returns
/// let stats = worker.run(stop).await;
/// assert_eq!(stats.spans_recorded, 1); // "tick" was excluded
/// let (exported, _) = spans.flush().await;
/// assert_eq!(exported[0].service_name(), Some("billing"));
/// assert_eq!(exported[0].events().len(), 1); // "sent", as a span event
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct NewRelicLayerBuilder {
    spans: Option<Arc<SpanBatch>>,
    logs: Option<Arc<LogBatch>>,
    service_name: Option<Arc<str>>,
    capacity: usize,
    span_events: bool,
    sample_ratio: f64,
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
            .field("sample_ratio", &self.sample_ratio)
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
    #[must_use = "a builder does nothing until `build()` is called"]
    pub fn builder() -> NewRelicLayerBuilder {
        NewRelicLayerBuilder {
            spans: None,
            logs: None,
            service_name: None,
            capacity: DEFAULT_CHANNEL_CAPACITY,
            span_events: false,
            sample_ratio: 1.0,
            excluded: DEFAULT_EXCLUDED_TARGETS
                .iter()
                .map(|t| Cow::Borrowed(*t))
                .collect(),
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
    #[must_use = "builder methods return the changed builder"]
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
    #[must_use = "builder methods return the changed builder"]
    pub fn logs(mut self, batch: Arc<LogBatch>) -> Self {
        self.logs = Some(batch);
        self
    }

    /// Forgets the span and log batches set so far.
    pub(crate) fn without_batches(mut self) -> Self {
        (self.spans, self.logs) = (None, None);
        self
    }

    /// The `service.name` written on every span and log (none by default).
    /// When the batches' common attributes name the service, as
    /// [`Telemetry`](crate::Telemetry)'s do, leave this unset: the common
    /// block names it once per payload; a name set here wins over it.
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
    #[must_use = "builder methods return the changed builder"]
    pub fn service_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// How many spans and logs may wait for the worker (default
    /// [`DEFAULT_CHANNEL_CAPACITY`], at least 1). The layer records each
    /// span and log into its batch at once when the batch's lock is free, and
    /// hands it to the worker's channel only when another recording or a flush
    /// holds that lock. When the channel is full, new ones are dropped and
    /// counted in
    /// [`LayerStats::items_dropped_channel_full`](crate::tracing_layer::LayerStats::items_dropped_channel_full).
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::LogBatch;
    /// use std::sync::Arc;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = Arc::new(LogBatch::new());
    /// let (layer, _worker) = NewRelicLayer::builder().logs(logs.clone()).channel_capacity(2).build();
    /// let handle = layer.handle();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     for i in 0..3 {
    ///         tracing::info!(i, "nothing else holds the batch's lock");
    ///     }
    /// });
    /// // Recorded at once, with no hop through the channel or the worker.
    /// assert_eq!(logs.len().await, 3);
    /// assert_eq!(handle.stats().logs_recorded, 3);
    /// assert_eq!(handle.stats().items_dropped_channel_full, 0);
    /// # }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn channel_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Also records every event inside an exported span as a span event of
    /// that span (named by the event's message, with `level`, `target` and the
    /// event's fields as attributes), up to
    /// [`MAX_SPAN_EVENTS`](crate::tracing_layer::MAX_SPAN_EVENTS) per span. Off
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
    #[must_use = "builder methods return the changed builder"]
    pub fn span_events(mut self, enabled: bool) -> Self {
        self.span_events = enabled;
        self
    }

    /// The share of new traces exported, from 0.0 (none) to 1.0 (all, the
    /// default). A value outside, or NaN, is a mistake this builder cannot
    /// return (its `build` does not fail): it logs a WARN naming the value
    /// and keeps the nearest valid ratio (NaN: 1.0, export everything).
    /// [`TelemetryBuilder::trace_sample_ratio`](crate::TelemetryBuilder::trace_sample_ratio)
    /// refuses such values instead.
    ///
    /// The decision is made once per trace, from its trace id (its rightmost
    /// 56 bits, the random part of a W3C trace id, compared with a threshold
    /// as in OpenTelemetry's consistent probability sampling), so every
    /// service with the same ratio decides the same way for a trace without
    /// talking to the others. A trace continued from another service
    /// (`traceparent`) follows that service's decision instead, whatever the
    /// ratio, and passes it on in the flags of outgoing `traceparent`s. An
    /// unsampled span is not exported and costs next to nothing; it is
    /// counted in [`LayerStats::spans_unsampled`](crate::tracing_layer::LayerStats::spans_unsampled).
    /// Logs are not sampled: they are exported with their `trace.id` either way.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::SpanBatch;
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spans = Arc::new(SpanBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).sample_ratio(0.0).build();
    /// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
    ///     tracing::info_span!("request").in_scope(|| tracing::info_span!("query").in_scope(|| {}));
    /// });
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel();
    /// let stats = worker.run(stop).await;
    /// assert_eq!((stats.spans_recorded, stats.spans_unsampled), (0, 2));
    /// assert_eq!(spans.len().await, 0);
    /// # }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = if ratio.is_nan() {
            1.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        if self.sample_ratio != ratio {
            tracing::warn!(
                ratio,
                kept = self.sample_ratio,
                "trace sample ratio outside 0 to 1: the nearest valid ratio is used"
            );
        }
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
    #[must_use = "builder methods return the changed builder"]
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
    #[must_use = "the layer exports nothing until it is added to a subscriber and its worker runs"]
    pub fn build(self) -> (NewRelicLayer, LayerWorker) {
        self.build_counting_into(Arc::new(LayerCounters::default()))
    }

    /// Builds a layer that counts into `counters` (which several layers of
    /// one `Telemetry` share).
    pub(crate) fn build_counting_into(
        self,
        counters: Arc<LayerCounters>,
    ) -> (NewRelicLayer, LayerWorker) {
        let export_spans = self.spans.is_some();
        let export_logs = self.logs.is_some();
        let (sender, worker) =
            worker::channel(self.capacity, self.spans, self.logs, counters.clone());
        let settings = Settings {
            export_spans,
            export_logs,
            span_events: self.span_events,
            sample_ratio: self.sample_ratio,
            service_name: self.service_name,
            excluded: self.excluded,
        };
        let layer = NewRelicLayer::new(sender, counters, settings);
        (layer, worker)
    }
}
