//! Batches: where recorded data waits for the next harvest, and the limits
//! on what reaches the wire.
//!
//! [`MetricBatch`] aggregates metrics into series (recorded by name and
//! attributes, or through bound [`CounterHandle`], [`GaugeHandle`] and
//! [`SummaryHandle`] handles); [`EventBatch`], [`LogBatch`] and [`SpanBatch`]
//! buffer items up to a capacity. Batches are `Send + Sync`: share them as
//! `Arc<...>` across tasks and threads. Recording into an existing metric
//! series takes no lock and writes nothing shared but the series itself,
//! whose value lives in atomics; each shard's `tokio::sync::Mutex` guards
//! only the batch's structure (making a series, within the series limit and
//! the memory budget; letting go of idle series at a flush). Item batches
//! append under their lock.
//!
//! An item batch's flush swaps its buffer out in O(1) under its lock. A
//! metric batch's flush reads and resets every series in its shards' tables
//! with the locks released, so recording goes on meanwhile; its cost is
//! proportional to the series the batch holds (idle ones and those bound to
//! handles included), not to those written since the last flush, and it
//! yields to the runtime between stretches of series. Series that leave
//! (no handle holds them, and they went [`DEFAULT_IDLE_HARVESTS`] harvests
//! without an update, or every such series for
//! [`MetricBatch::flush`]) cost a rebuild of their shard's table, under that
//! shard's lock.
//!
//! # Recording never hands you an error
//!
//! `record_count(..).await` and the other `record` calls are fire and
//! forget: an item the batch refuses is counted ([`RecordStats`], from
//! `record_stats()`, and in [`Telemetry::stats`](crate::Telemetry::stats)),
//! logged at WARN once per harvest interval for each reason, handed to the
//! optional `on_refused` callback (on the batch builders and on
//! [`TelemetryBuilder`](crate::TelemetryBuilder::on_refused)), and never
//! reaches the wire; nothing recorded before it is lost. The `try_record_*`
//! calls return the [`RecordError`](crate::RecordError) for code that wants
//! it. Besides the rules below, a batch refuses the first series of a new
//! metric name when it is full (a known name's new series go to its
//! overflow series instead, see [`MetricBatchBuilder::series_limit`]), an
//! item past its capacity or the pipeline's memory budget, and anything
//! after it was closed.
//!
//! # Limits on what reaches the wire
//!
//! Every string and number is checked when it is recorded (or handed to a
//! client), in one place, so nothing the APIs would drop or reject is sent.
//! Values that carry meaning only whole are refused (a `RecordError`,
//! counted in [`RecordStats::items_dropped_invalid`]); free text is cut on a
//! character boundary and counted in [`RecordStats::values_truncated`].
//!
//! | field | bound | over it |
//! |---|---|---|
//! | attribute key | 1 to 255 characters | refused (`EmptyAttributeKey`, `AttributeKeyTooLong`) |
//! | attribute string value | Metric 4,096, Event 4,096, Log 4,094, Trace 4,000 characters | cut |
//! | attribute float | finite | refused (`NonFiniteAttribute`) |
//! | attributes per item | Metric 100, Event 255 (with the common ones), Log 255, Trace 200 (with the span's name, `duration.ms`, `parent.id` and `service.name`, which travel as attributes) | refused (`TooManyAttributes`) |
//! | metric attribute key | not `interval.ms`, `timestamp`, `value`, `common`, `min`, `max`, `count`, `sum`, `metrics`, `otel.metric.overflow`, nor the metric's name | refused (`ReservedAttribute`) |
//! | metric name | 1 to 255 characters (the API states none; a name is the series' identity) | refused (`EmptyName`, `NameTooLong`) |
//! | metric value, summary | finite; a summary's count above 0 and min <= max; an aggregate that would overflow to infinity | refused (`NonFiniteValue`, `InvalidSummary`, `AggregateOverflow`) |
//! | event type | 1 to 255 ASCII letters, digits, `_`, `:` | refused (`InvalidEventType`) |
//! | log message | 32,768 characters (the API states none) | cut |
//! | span name, span event name, span service name | 1 to 4,000 characters (they travel as Trace API attributes) | empty refused (`EmptyName`), longer cut |
//! | span id, trace id, parent id | 1 to 128 characters | refused (`EmptySpanId`, `SpanIdTooLong`) |
//! | timestamp | from 1970 to 2^63-1 ms; metrics 48 h back to 24 h ahead; logs at most 48 h back | refused (`TimestampOutOfRange`) |
//! | `interval.ms` | at least 1 | raised to 1 |
//! | common attributes (batch builders) | as attributes | the offending pair removed with a warning, long values cut |
//!
//! ```
//! use newrelic_telemetry::{Log, LogBatch, MetricBatch, RecordError, Value};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let metrics = MetricBatch::new();
//! metrics.record_count("jobs", 1.0, ()).await;
//! // Refused: values and keys the Metric API would reject. What came before stays.
//! let nan = metrics.try_record_count("jobs", f64::NAN, ()).await;
//! assert!(matches!(nan, Err(RecordError::NonFiniteValue { .. })));
//! let reserved = metrics.try_record_count("jobs", 1.0, [("interval.ms", 5)]).await;
//! assert!(matches!(reserved, Err(RecordError::ReservedAttribute { .. })));
//! metrics.record_gauge("cpu", f64::INFINITY, ()).await; // fire and forget: counted
//! assert_eq!(metrics.record_stats().items_dropped_invalid, 3);
//! assert_eq!(metrics.flush().await.0.len(), 1);
//!
//! // Cut: free text past its bound (4,094 characters in a log attribute).
//! let logs = LogBatch::new();
//! logs.record(Log::new("upload").with_attribute("body", "x".repeat(5_000))).await;
//! let (items, _) = logs.flush().await;
//! let body = items[0].attributes().get("body");
//! assert!(matches!(body, Some(Value::String(s)) if s.chars().count() == 4_094));
//! assert_eq!(logs.record_stats().values_truncated, 1);
//! # }
//! ```

mod items;
mod metric;
pub(crate) mod refusal;

use std::future::Future;
use std::sync::Arc;

pub use items::{
    BatchItem, DEFAULT_CAPACITY, EARLY_HARVEST_BYTES, EventBatch, ItemBatch, ItemBatchBuilder,
    LogBatch, SpanBatch,
};
pub use metric::{
    CounterHandle, DEFAULT_IDLE_HARVESTS, DEFAULT_MAX_SERIES, DEFAULT_SERIES_LIMIT,
    DistributionHandle, GaugeHandle, HistogramKind, MetricBatch, MetricBatchBuilder, NameOverflow,
    OVERFLOW_ATTRIBUTE, SummaryHandle,
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

    /// Lets go of what the batch still buffers when its harvester's
    /// shutdown deadline passed (already counted as dropped): an item
    /// batch's items and their memory. A metric batch keeps its series,
    /// whose memory it owns (a drain now would send gauges again and make
    /// points for a pipeline that is stopping).
    #[doc(hidden)]
    fn abandon(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

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
