//! The channel between the layer and its worker, and the [`LayerWorker`]
//! that drains it into the batches.
//!
//! The layer's side, [`ItemSender`], never waits: a full channel or a gone
//! worker drops the item and counts it. The worker's side records what it
//! receives into the [`SpanBatch`] and [`LogBatch`], and warns (throttled)
//! when it sees that items were dropped on a full channel.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stats::{LayerCounters, LayerHandle, LayerStats};
use crate::batch::{LogBatch, SpanBatch};
use crate::log::Log;
use crate::span::Span;

/// How many items the worker takes from the channel at a time.
const RECEIVE_CHUNK: usize = 256;

/// The least time between two of the worker's "items dropped" warnings.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What the layer hands to its worker.
pub(super) enum Item {
    Span(Span),
    Log(Log),
}

/// A channel of `capacity` items from a layer to a worker that records them
/// into `spans` and `logs`, both sides counting into `counters`.
pub(super) fn channel(
    capacity: usize,
    spans: Option<Arc<SpanBatch>>,
    logs: Option<Arc<LogBatch>>,
    counters: Arc<LayerCounters>,
) -> (ItemSender, LayerWorker) {
    let (sender, receiver) = mpsc::channel(capacity);
    let sender = ItemSender {
        sender,
        counters: counters.clone(),
    };
    let worker = LayerWorker {
        receiver,
        spans,
        logs,
        counters,
    };
    (sender, worker)
}

/// The layer's end of the channel.
pub(super) struct ItemSender {
    sender: mpsc::Sender<Item>,
    counters: Arc<LayerCounters>,
}

impl ItemSender {
    /// Hands `item` to the worker without waiting; drops and counts it when
    /// the channel is full or the worker is gone.
    pub(super) fn send(&self, item: Item) {
        match self.sender.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters
                    .items_dropped_channel_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {
                self.counters
                    .items_dropped_worker_gone
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Moves what a [`NewRelicLayer`](crate::tracing_layer::NewRelicLayer)
/// exports from its channel into the batches.
///
/// It ends when its token is cancelled or when the layer is dropped, after
/// recording everything already in the channel; see the
/// [module documentation](crate::tracing_layer#shutting-down) for the shutdown order.
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
    counters: Arc<LayerCounters>,
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
        LayerHandle::new(self.counters.clone())
    }

    /// Records what the layer exports into the batches until `token` is
    /// cancelled or the layer is dropped; then records what is still in the
    /// channel, and returns the counters. Later exports are dropped and
    /// counted in [`LayerStats::items_dropped_worker_gone`].
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
                    Some(batch) => (batch.try_record(span).await, &self.counters.spans_recorded),
                    None => continue,
                },
                Item::Log(log) => match &self.logs {
                    Some(batch) => (batch.try_record(log).await, &self.counters.logs_recorded),
                    None => continue,
                },
            };
            let counter = if recorded.is_ok() {
                counter
            } else {
                &self.counters.items_dropped_by_batch
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
    fn check(&mut self, counters: &LayerCounters, last_chance: bool) {
        let dropped = counters.items_dropped_channel_full.load(Ordering::Relaxed);
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
