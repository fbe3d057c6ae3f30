//! What the layer and its worker counted: the shared [`Counters`], their
//! snapshot [`LayerStats`], and the [`LayerHandle`] that reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the layer, its worker and their handles.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) dropped_channel_full: AtomicU64,
    pub(super) dropped_worker_gone: AtomicU64,
    pub(super) spans_recorded: AtomicU64,
    pub(super) logs_recorded: AtomicU64,
    pub(super) refused_by_batch: AtomicU64,
    pub(super) span_events_dropped: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> LayerStats {
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
    /// [`MAX_SPAN_EVENTS`](crate::tracing_layer::MAX_SPAN_EVENTS) (a
    /// long-lived span would otherwise grow without bound, and end up too
    /// large to send).
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
    pub(super) fn new(counters: Arc<Counters>) -> Self {
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
