//! Batches: where recorded data waits for the next harvest.
//!
//! [`MetricBatch`] aggregates metrics into series (recorded by name and
//! attributes, or through bound [`Counter`], [`Gauge`] and [`SummaryHandle`]
//! handles); [`EventBatch`], [`LogBatch`] and [`SpanBatch`] buffer items up to
//! a capacity. All of them keep their state behind `tokio::sync::Mutex`es and
//! are safe to share across tasks as `Arc<...>`. An item batch's flush swaps
//! its buffer out in O(1) under its lock; a metric batch's flush reads and
//! resets its series with its locks released.

mod items;
mod metric;
pub(crate) mod refusal;

use std::future::Future;
use std::sync::Arc;

pub use items::{
    BatchItem, DEFAULT_CAPACITY, EventBatch, ItemBatch, ItemBatchBuilder, LogBatch, SpanBatch,
};
pub use metric::{
    Counter, DEFAULT_IDLE_HARVESTS, DEFAULT_MAX_SERIES, DEFAULT_SERIES_LIMIT, Gauge, MetricBatch,
    MetricBatchBuilder, NameOverflow, OVERFLOW_ATTRIBUTE, SummaryHandle,
};

pub(crate) use metric::SeriesLimits;

pub use crate::budget::{DEFAULT_MEMORY_BUDGET, MemoryStats};
use crate::budget::{HeldBytes, MemoryBudget};
use crate::common::Common;

crate::counters::counters! {
    /// What a batch refused or changed since it was created.
    ///
    /// Successful recordings are not counted, to keep the hot path free of shared
    /// writes.
    ///
    /// ```
    /// use newrelic_telemetry::{Event, EventBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let events = EventBatch::new();
    /// assert!(events.try_record(Event::new("not a valid type!")).await.is_err());
    /// events.close().await;
    /// assert_eq!(events.try_record(Event::new("Order")).await, Err(RecordError::Closed));
    ///
    /// let stats = events.record_stats();
    /// assert_eq!((stats.items_dropped_invalid, stats.items_dropped_closed), (1, 1));
    /// # }
    /// ```
    pub struct RecordStats / RecordCounters {
        /// Items refused because they broke a rule of the API (NaN values,
        /// empty or invalid names, attribute limits, reserved keys, timestamps).
        items_dropped_invalid,
        /// Text values cut to their documented bound.
        values_truncated,
        /// Items dropped because the batch was at its capacity.
        items_dropped_buffer_full,
        /// New metric series dropped because the batch was at its series limit.
        series_dropped_limit,
        /// Items refused because the batch was closed (its harvester had shut
        /// down).
        items_dropped_closed,
        /// Items (for a metric batch, new series) refused because the pipeline
        /// held its memory budget.
        items_dropped_over_budget,
        /// Metric measurements recorded by name into their name's overflow
        /// series, for want of room for a series of their own (not a drop:
        /// they are sent there); see
        /// [`MetricBatchBuilder::series_limit`](crate::batch::MetricBatchBuilder::series_limit).
        measurements_overflowed,
    }
}

impl RecordStats {
    /// Items refused, for any reason (for a metric batch, new series).
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().capacity(1).build();
    /// logs.record(Log::new("kept")).await;
    /// logs.try_record(Log::new("no room")).await.unwrap_err();
    /// logs.try_record(Log::new("bad").with_attribute("", 1)).await.unwrap_err();
    /// assert_eq!(logs.record_stats().items_dropped(), 2);
    /// # }
    /// ```
    pub fn items_dropped(&self) -> u64 {
        self.items_dropped_invalid
            + self.items_dropped_buffer_full
            + self.series_dropped_limit
            + self.items_dropped_closed
            + self.items_dropped_over_budget
    }
}

/// A batch a [`Harvester`](crate::Harvester) can drain: one of [`MetricBatch`],
/// [`EventBatch`], [`LogBatch`] and [`SpanBatch`]. Sealed.
///
/// ```
/// use newrelic_telemetry::{Log, LogBatch, MetricBatch};
/// use newrelic_telemetry::batch::Batch;
///
/// async fn pending<B: Batch>(batch: &B) -> usize {
///     batch.flush().await.0.len()
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let metrics = MetricBatch::new();
/// metrics.record_gauge("temperature", 21.5, ()).await;
/// let logs = LogBatch::new();
/// logs.record(Log::new("hello")).await;
/// assert_eq!(pending(&metrics).await, 1);
/// assert_eq!(pending(&logs).await, 1);
/// # }
/// ```
pub trait Batch: sealed::Sealed + Send + Sync + 'static {
    /// The items the batch yields when flushed.
    type Item: Send + Sync + 'static;

    /// Takes everything buffered and the common block, and starts a new interval.
    fn flush(&self) -> impl Future<Output = (Vec<Self::Item>, Common)> + Send;

    /// Completes when the batch is filling up and wants an early harvest.
    fn harvest_requested(&self) -> impl Future<Output = ()> + Send;

    /// Refuses new items from now on; a harvester calls it before its final
    /// flush.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// What the batch refused or changed so far.
    fn record_stats(&self) -> RecordStats;

    /// What the batch's pipeline holds in memory now, against its budget.
    fn memory(&self) -> MemoryStats {
        self.memory_budget().snapshot()
    }

    /// Takes everything buffered, like [`flush`](Self::flush), but leaves it
    /// counted against the budget: the harvester carries it on.
    #[doc(hidden)]
    fn take(&self) -> impl Future<Output = Taken<Self::Item>> + Send;

    /// The pipeline's memory budget, shared with its harvester.
    #[doc(hidden)]
    fn memory_budget(&self) -> &Arc<MemoryBudget>;
}

/// What a batch hands its harvester at a harvest: the items, their common
/// block, and the bytes they hold (still counted against the budget, as are
/// the items until they are resolved).
#[doc(hidden)]
#[allow(unreachable_pub)]
pub struct Taken<T> {
    pub(crate) items: Vec<T>,
    pub(crate) common: Common,
    pub(crate) held: HeldBytes,
}

impl<T> Taken<T> {
    /// Lets go of what was taken: its bytes and items leave the budget (a
    /// flush whose caller carries the items on outside the pipeline).
    pub(crate) fn release(self, budget: &MemoryBudget) -> (Vec<T>, Common) {
        budget.resolve_items(self.items.len());
        (self.items, self.common)
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
}
