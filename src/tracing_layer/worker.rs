//! How what the layer exports reaches the batches: straight in when it can,
//! through a channel and the [`LayerWorker`] that drains it when it cannot.
//!
//! The layer's side, [`ItemSender`], never waits. It records an item into
//! its [`SpanBatch`] or [`LogBatch`] at once when the batch's lock is free
//! (nearly always: the lock is held only to push an item or to swap the
//! buffer out at a flush), with no hop to another task and no wake-up.
//! Otherwise it hands the item to a bounded channel; a full channel or a gone
//! worker drops the item and counts it. The worker's side waits for the lock
//! and records what it receives, and warns (throttled) when it sees that
//! items were dropped on a full channel.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stats::{LayerCounters, LayerHandle, LayerStats};
use crate::batch::{LogBatch, SpanBatch};
use crate::error::RecordError;
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

/// A channel of `capacity` items from a layer to a worker, both recording
/// into `spans` and `logs` and counting into `counters`.
pub(super) fn channel(
    capacity: usize,
    spans: Option<Arc<SpanBatch>>,
    logs: Option<Arc<LogBatch>>,
    counters: Arc<LayerCounters>,
) -> (ItemSender, LayerWorker) {
    let (sender, receiver) = mpsc::channel(capacity);
    let destinations = Arc::new(Destinations {
        spans,
        logs,
        counters,
    });
    let sender = ItemSender {
        sender,
        destinations: destinations.clone(),
    };
    let worker = LayerWorker {
        receiver,
        destinations,
    };
    (sender, worker)
}

/// The batches the layer's items go to, and the counters of what became of
/// them: shared by both sides, so that an item recorded at once and one
/// recorded by the worker are counted alike.
struct Destinations {
    spans: Option<Arc<SpanBatch>>,
    logs: Option<Arc<LogBatch>>,
    counters: Arc<LayerCounters>,
}

impl Destinations {
    /// Records `item` unless its batch's lock is taken: then gives it back.
    fn record_now(&self, item: Item) -> Option<Item> {
        match item {
            Item::Span(span) => {
                let batch = self.spans.as_ref()?;
                match batch.try_record_now(span) {
                    Ok(result) => self.count(result, &self.counters.spans_recorded),
                    Err(span) => return Some(Item::Span(span)),
                }
            }
            Item::Log(log) => {
                let batch = self.logs.as_ref()?;
                match batch.try_record_now(log) {
                    Ok(result) => self.count(result, &self.counters.logs_recorded),
                    Err(log) => return Some(Item::Log(log)),
                }
            }
        }
        None
    }

    /// Records `item`, waiting for its batch's lock.
    async fn record(&self, item: Item) {
        match item {
            Item::Span(span) => {
                if let Some(batch) = &self.spans {
                    let result = batch.try_record(span).await;
                    self.count(result, &self.counters.spans_recorded);
                }
            }
            Item::Log(log) => {
                if let Some(batch) = &self.logs {
                    let result = batch.try_record(log).await;
                    self.count(result, &self.counters.logs_recorded);
                }
            }
        }
    }

    fn count(&self, result: Result<(), RecordError>, recorded: &AtomicU64) {
        let counter = if result.is_ok() {
            recorded
        } else {
            &self.counters.items_dropped_by_batch
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The layer's end: records at once, or through the channel.
pub(super) struct ItemSender {
    sender: mpsc::Sender<Item>,
    destinations: Arc<Destinations>,
}

impl ItemSender {
    /// Records `item` without waiting, or hands it to the worker when its
    /// batch's lock is taken; drops and counts it when the worker is gone
    /// or its channel is full.
    pub(super) fn send(&self, item: Item) {
        let counters = &self.destinations.counters;
        if self.sender.is_closed() {
            counters
                .items_dropped_worker_gone
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(item) = self.destinations.record_now(item) else {
            return;
        };
        match self.sender.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counters
                    .items_dropped_channel_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {
                counters
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
    destinations: Arc<Destinations>,
}

impl fmt::Debug for LayerWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerWorker")
            .field("queued", &self.receiver.len())
            .field("stats", &self.destinations.counters.snapshot())
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
        LayerHandle::new(self.destinations.counters.clone())
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
        let counters = &self.destinations.counters;
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
                        warned.check(counters, true);
                        return counters.snapshot();
                    }
                    self.record_all(&mut buffer).await;
                    warned.check(counters, false);
                }
            }
        }
        // Cancelled: refuse new items, record those already queued.
        self.receiver.close();
        while self.receiver.recv_many(&mut buffer, RECEIVE_CHUNK).await > 0 {
            self.record_all(&mut buffer).await;
        }
        warned.check(counters, true);
        counters.snapshot()
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
            self.destinations.record(item).await;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;
    use tracing_subscriber::prelude::*;

    use crate::batch::LogBatch;
    use crate::tracing_layer::NewRelicLayer;

    #[tokio::test]
    async fn while_the_batch_is_locked_items_wait_in_the_channel_and_overflow_is_counted() {
        let logs = Arc::new(LogBatch::new());
        let (layer, worker) = NewRelicLayer::builder()
            .logs(logs.clone())
            .channel_capacity(2)
            .build();
        let handle = layer.handle();
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

        // (The crate's own targets are never exported: these events say
        // they come from the application.) A flush or another recording
        // holds the lock: the first two wait
        // in the channel, the rest are dropped, and the caller never waits.
        let held = logs.hold_lock().await;
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..5 {
                tracing::info!(target: "app", i, "while locked");
            }
        });
        let stats = handle.stats();
        assert_eq!(
            (stats.logs_recorded, stats.items_dropped_channel_full),
            (0, 3)
        );
        drop(held);

        // The lock is free again: recorded at once, ahead of the queued two.
        tracing::dispatcher::with_default(
            &dispatch,
            || tracing::info!(target: "app", i = 5, "after"),
        );
        assert_eq!(handle.stats().logs_recorded, 1);
        drop(dispatch);

        let stats = worker.run(CancellationToken::new()).await;
        assert_eq!(
            (stats.logs_recorded, stats.items_dropped_channel_full),
            (3, 3)
        );
        let (items, _) = logs.flush().await;
        let order: Vec<_> = items
            .iter()
            .map(|log| log.attributes().get("i").cloned())
            .collect();
        assert_eq!(order, [Some(5.into()), Some(0.into()), Some(1.into())]);
    }
}
