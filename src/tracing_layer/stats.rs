//! What the layer and its worker counted: the shared `LayerCounters`, their
//! snapshot [`LayerStats`], and the [`LayerHandle`] that reads them.

use std::sync::Arc;

crate::counters::counters! {
    /// What a [`NewRelicLayer`](crate::tracing_layer::NewRelicLayer) and its
    /// [`LayerWorker`](crate::tracing_layer::LayerWorker) did so far.
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
    /// assert_eq!(stats.items_dropped_channel_full, 0);
    /// assert_eq!(logs.len().await, 1);
    /// # }
    /// ```
    pub struct LayerStats / LayerCounters {
        /// Spans and logs dropped because the layer's channel was full.
        items_dropped_channel_full,
        /// Spans and logs dropped because the worker had ended (or was dropped
        /// without running).
        items_dropped_worker_gone,
        /// Spans recorded into the span batch (at once by the layer, or by the
        /// worker when the batch's lock was busy).
        spans_recorded,
        /// Logs recorded into the log batch (at once by the layer, or by the
        /// worker when the batch's lock was busy).
        logs_recorded,
        /// Spans and logs a batch refused: it was full, or the item broke a rule
        /// of the API (the batch's [`record_stats`](crate::batch::ItemBatch::record_stats)
        /// says which).
        items_dropped_by_batch,
        /// Span events not attached because their span already had
        /// [`MAX_SPAN_EVENTS`](crate::tracing_layer::MAX_SPAN_EVENTS) (a
        /// long-lived span would otherwise grow without bound, and end up too
        /// large to send).
        span_events_dropped,
        /// Spans not exported because their trace is not sampled (the
        /// incoming `traceparent` said so, or the layer's
        /// [`sample_ratio`](crate::tracing_layer::NewRelicLayerBuilder::sample_ratio)
        /// left the trace out).
        spans_unsampled,
    }
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
/// assert_eq!(handle.stats().items_dropped_channel_full, 0);
/// ```
#[derive(Clone, Debug)]
pub struct LayerHandle {
    counters: Arc<LayerCounters>,
}

impl LayerHandle {
    pub(super) fn new(counters: Arc<LayerCounters>) -> Self {
        LayerHandle { counters }
    }

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
    ///     .build();
    /// let handle = layer.handle();
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info!("recorded");
    ///     tracing::info!(target: "hyper::proto", "never exported: an excluded target");
    /// });
    /// let stats = handle.stats();
    /// assert_eq!((stats.logs_recorded, stats.items_dropped_channel_full), (1, 0));
    /// ```
    pub fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }
}
