//! Buffering batches for events, logs and spans.

use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard, Notify};

use super::refusal::{OnRefused, Refusals};
use super::{Batch, RecordStats, Taken};
use crate::attributes::Attributes;
use crate::budget::{
    DEFAULT_MEMORY_BUDGET, HeapSize, HeldBytes, MemoryBudget, MemoryStats, WORK_RESERVE,
};
use crate::common::Common;
use crate::error::RecordError;
use crate::event::Event;
use crate::log::Log;
use crate::span::Span;
use crate::validate::Validate;

/// Items an event, log or span batch holds at most by default: 50,000. See
/// [`ItemBatchBuilder::capacity`].
pub const DEFAULT_CAPACITY: usize = 50_000;

/// An event, log or span batch asks for an early harvest once it holds this
/// many bytes (1 MiB; less than half of what even the smallest budget lets
/// it record): a busy service's items are then encoded while they are still
/// in the processor's caches, and sent as payloads of a few hundred
/// kilobytes of JSON instead of waiting for the interval. A quiet service
/// never reaches it and sends at each interval.
///
/// ```
/// use newrelic_telemetry::batch::EARLY_HARVEST_BYTES;
///
/// assert_eq!(EARLY_HARVEST_BYTES, 1024 * 1024);
/// ```
pub const EARLY_HARVEST_BYTES: usize = 1024 * 1024;

/// A batch of [`Event`]s. Its common attributes are merged into every event
/// when it is sent (the Event API has no common block).
///
/// ```
/// use newrelic_telemetry::{Event, EventBatch, attrs};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let events = EventBatch::builder().common_attributes(attrs!["env" => "prod"]).build();
/// events.record(Event::new("Order").with_attribute("total", 42.0)).await;
/// assert_eq!(events.len().await, 1);
/// # }
/// ```
pub type EventBatch = ItemBatch<Event>;
/// A batch of [`Log`] records.
///
/// ```
/// use newrelic_telemetry::{Log, LogBatch};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let logs = LogBatch::new();
/// logs.record(Log::new("started").with_level("INFO")).await;
/// let (items, _common) = logs.flush().await;
/// assert_eq!(items[0].message(), "started");
/// # }
/// ```
pub type LogBatch = ItemBatch<Log>;
/// A batch of [`Span`]s.
///
/// ```
/// use newrelic_telemetry::{Span, SpanBatch};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let spans = SpanBatch::new();
/// spans.record(Span::new("GET /orders").finish()).await;
/// assert_eq!(spans.len().await, 1);
/// # }
/// ```
pub type SpanBatch = ItemBatch<Span>;

/// An item type an [`ItemBatch`] can hold: [`Event`], [`Log`] or [`Span`]. Sealed.
///
/// ```
/// use newrelic_telemetry::{Log, Span};
/// use newrelic_telemetry::batch::{BatchItem, ItemBatch};
///
/// fn small_batch<T: BatchItem>() -> ItemBatch<T> {
///     ItemBatch::builder().capacity(1_000).build()
/// }
/// let logs = small_batch::<Log>();
/// let spans = small_batch::<Span>();
/// assert!(logs.common_attributes().is_none() && spans.common_attributes().is_none());
/// ```
pub trait BatchItem: Validate + HeapSize + Send + Sync + 'static {}
impl BatchItem for Event {}
impl BatchItem for Log {}
impl BatchItem for Span {}
impl BatchItem for crate::distribution::DistributionPoint {}

/// The items and whether the batch still takes new ones, under one lock so
/// that closing and recording are ordered.
struct Buffer<T> {
    items: Vec<T>,
    /// What the items hold, as counted against the budget.
    held_bytes: usize,
    closed: bool,
}

/// A batch that buffers items of one type until the next harvest.
///
/// Use it through its aliases [`EventBatch`], [`LogBatch`] and [`SpanBatch`].
/// Items are validated when recorded (see [`RecordError`]); when the batch holds
/// its capacity, it asks its harvester for an early harvest and drops new items
/// (counted in [`RecordStats::items_dropped_buffer_full`]) until then: the items
/// already buffered are never the ones lost.
///
/// ```
/// use newrelic_telemetry::{Event, EventBatch};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let events = Arc::new(EventBatch::new());
/// events.record(Event::new("Purchase").with_attribute("amount", 12.5)).await;
/// let (items, _common) = events.flush().await;
/// assert_eq!(items.len(), 1);
/// # Ok(()) }
/// ```
pub struct ItemBatch<T> {
    items: Mutex<Buffer<T>>,
    capacity: usize,
    common_attributes: Option<Arc<Attributes>>,
    refusals: Refusals,
    harvest: Notify,
    budget: Arc<MemoryBudget>,
    /// A disabled `Telemetry`'s batch: recording does nothing.
    off: bool,
}

impl<T> std::fmt::Debug for ItemBatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemBatch")
            .field("item", &std::any::type_name::<T>())
            .field("capacity", &self.capacity)
            .field("common_attributes", &self.common_attributes)
            .field("memory", &self.budget.snapshot())
            .finish_non_exhaustive()
    }
}

/// Configures an [`ItemBatch`].
///
/// ```
/// use newrelic_telemetry::{Attributes, LogBatch, attrs};
///
/// let logs = LogBatch::builder()
///     .common_attributes(attrs!["service.name" => "checkout"])
///     .capacity(10_000)
///     .build();
/// assert_eq!(logs.common_attributes(), Some(&Attributes::from(attrs!["service.name" => "checkout"])));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ItemBatchBuilder<T> {
    common_attributes: Option<Attributes>,
    capacity: usize,
    memory_budget: usize,
    on_refused: Option<OnRefused>,
    off: bool,
    item: PhantomData<fn() -> T>,
}

impl<T: BatchItem> ItemBatchBuilder<T> {
    /// Attributes every item shares: sent in the common block (logs, spans) or
    /// merged into each event. Invalid pairs are removed with a warning.
    /// Called again, it merges: a key given again takes the new value, as in
    /// [`TelemetryBuilder::common_attributes`](crate::TelemetryBuilder::common_attributes).
    ///
    /// ```
    /// use newrelic_telemetry::{EventBatch, attrs};
    ///
    /// let events = EventBatch::builder()
    ///     .common_attributes(attrs!["env" => "staging", "team" => "payments"])
    ///     .common_attributes(attrs!["env" => "prod"])
    ///     .build();
    /// let common = events.common_attributes().unwrap();
    /// assert_eq!(common.len(), 2);
    /// assert_eq!(common.get("env"), Some(&"prod".into()));
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn common_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        self.common_attributes
            .get_or_insert_with(Attributes::new)
            .absorb(attributes.into());
        self
    }

    /// The most items the batch buffers between harvests (default 50,000). At
    /// half of it (or once it holds [`EARLY_HARVEST_BYTES`], see
    /// [`memory_budget`](Self::memory_budget)) the batch asks for an early harvest.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().capacity(1).build();
    /// logs.record(Log::new("one")).await;
    /// assert_eq!(logs.try_record(Log::new("two")).await, Err(RecordError::BufferFull { capacity: 1 }));
    /// # }
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The most bytes the pipeline may hold in memory (default
    /// [`DEFAULT_MEMORY_BUDGET`](crate::batch::DEFAULT_MEMORY_BUDGET), 16 MiB; at
    /// least 4 MiB): items waiting here, items being encoded, and compressed
    /// payloads waiting to be sent. An item that would take the pipeline past
    /// its record limit (the budget less 2 MB kept for the work of sending,
    /// [`MemoryStats::record_limit_bytes`]) is refused with
    /// [`RecordError::MemoryBudgetFull`] (counted) and the harvester is asked
    /// to harvest. So that a busy service's items are sent before that
    /// happens, the batch asks for a harvest as soon as it holds
    /// [`EARLY_HARVEST_BYTES`] (1 MiB), whatever the interval; the send
    /// queue may fill half of the record limit, and past that the harvester
    /// drops its oldest payload.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().memory_budget(4 * 1024 * 1024).build();
    /// let big = || Log::new("x".repeat(30_000));
    /// let mut kept = 0;
    /// while logs.try_record(big()).await.is_ok() {
    ///     kept += 1;
    /// }
    /// let memory = logs.memory();
    /// assert_eq!(memory.record_limit_bytes, 4 * 1024 * 1024 - 2_000_000);
    /// assert!((70..=73).contains(&kept)); // 2.19 MB of 30 kB messages and their records
    /// assert!(matches!(logs.try_record(big()).await, Err(RecordError::MemoryBudgetFull { .. })));
    /// assert_eq!(logs.record_stats().items_dropped_over_budget, 2);
    /// # }
    /// ```
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Calls `f` with every item the batch refuses (after counting it, and
    /// besides the WARN logged once per harvest interval for each reason):
    /// to count refusals in the service's own metrics, or to fail a test.
    /// It runs on the recording task: keep it short.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, RecordError};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let refused = Arc::new(Mutex::new(Vec::new()));
    /// let seen = refused.clone();
    /// let logs = LogBatch::builder()
    ///     .capacity(1)
    ///     .on_refused(move |e: &RecordError| seen.lock().unwrap().push(e.clone()))
    ///     .build();
    /// logs.record(Log::new("kept")).await;
    /// logs.record(Log::new("no room")).await;
    /// assert_eq!(*refused.lock().unwrap(), [RecordError::BufferFull { capacity: 1 }]);
    /// # }
    /// ```
    pub fn on_refused(mut self, f: impl Fn(&RecordError) + Send + Sync + 'static) -> Self {
        self.on_refused = Some(OnRefused::new(f));
        self
    }

    /// The callback set by [`on_refused`](Self::on_refused), shared
    /// (`Telemetry` hands one to all its batches).
    pub(crate) fn on_refused_shared(mut self, f: Option<OnRefused>) -> Self {
        self.on_refused = f;
        self
    }

    /// A batch of a disabled `Telemetry`: recording returns at once, before
    /// any check, and keeps nothing.
    pub(crate) fn off(mut self, off: bool) -> Self {
        self.off = off;
        self
    }

    /// Builds the batch.
    ///
    /// ```
    /// use newrelic_telemetry::SpanBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spans = SpanBatch::builder().build();
    /// assert!(spans.is_empty().await);
    /// # }
    /// ```
    pub fn build(self) -> ItemBatch<T> {
        ItemBatch {
            items: Mutex::new(Buffer {
                items: Vec::new(),
                held_bytes: 0,
                closed: false,
            }),
            capacity: self.capacity,
            common_attributes: self
                .common_attributes
                .map(T::sanitize_common)
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            refusals: Refusals::new(self.on_refused),
            harvest: Notify::new(),
            budget: MemoryBudget::new(self.memory_budget),
            off: self.off,
        }
    }
}

impl<T: BatchItem> Default for ItemBatch<T> {
    fn default() -> Self {
        ItemBatch::new()
    }
}

impl<T: BatchItem> ItemBatch<T> {
    /// A batch with the default capacity and no common attributes.
    ///
    /// ```
    /// use newrelic_telemetry::EventBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let events = EventBatch::new();
    /// assert!(events.is_empty().await && events.common_attributes().is_none());
    /// # }
    /// ```
    pub fn new() -> Self {
        ItemBatch::builder().build()
    }

    /// A builder for a batch with common attributes or another capacity.
    ///
    /// ```
    /// use newrelic_telemetry::LogBatch;
    ///
    /// let logs = LogBatch::builder().capacity(100).build();
    /// assert!(logs.common_attributes().is_none());
    /// ```
    pub fn builder() -> ItemBatchBuilder<T> {
        ItemBatchBuilder {
            common_attributes: None,
            capacity: DEFAULT_CAPACITY,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            on_refused: None,
            off: false,
            item: PhantomData,
        }
    }

    /// Validates `item` and buffers it; fire and forget.
    ///
    /// Over-long string values are truncated to the API's limit (counted in
    /// [`RecordStats::values_truncated`]). An item the API would reject, or
    /// one with no room (capacity, memory budget, a closed batch), is
    /// refused: counted in [`record_stats`](Self::record_stats), logged at
    /// WARN once per harvest interval for each reason, and handed to the
    /// [`on_refused`](ItemBatchBuilder::on_refused) callback.
    /// [`try_record`](Self::try_record) returns the refusal instead.
    ///
    /// ```
    /// # use newrelic_telemetry::{Log, LogBatch};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// logs.record(Log::new("started").with_level("INFO")).await;
    /// logs.record(Log::new("bad").with_attribute("", 1)).await; // refused, counted
    /// assert_eq!(logs.len().await, 1);
    /// assert_eq!(logs.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    pub async fn record(&self, item: T) {
        let _ = self.try_record(item).await;
    }

    /// [`record`](Self::record), returning why an item was refused (it is
    /// counted, logged and handed to the callback all the same).
    ///
    /// ```
    /// # use newrelic_telemetry::{Log, LogBatch, RecordError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// let refused = logs.try_record(Log::new("bad").with_attribute("", 1)).await;
    /// assert_eq!(refused, Err(RecordError::EmptyAttributeKey));
    /// # }
    /// ```
    pub async fn try_record(&self, mut item: T) -> Result<(), RecordError> {
        if self.off {
            return Ok(());
        }
        let bytes = self.admit(&mut item, false)?;
        let buffer = self.items.lock().await;
        self.insert(buffer, item, bytes, false)
    }

    /// [`try_record`](Self::try_record) without waiting: when another
    /// recording or a flush holds the lock, the item comes back (validated,
    /// so validating it again changes nothing) for the caller to hand to a
    /// task that can wait. What the tracing layer records from inside
    /// `tracing`'s callbacks, which must not wait (nor log: a refusal's
    /// warning is logged at the next flush).
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn try_record_now(&self, mut item: T) -> Result<Result<(), RecordError>, T> {
        if self.off {
            return Ok(Ok(()));
        }
        let bytes = match self.admit(&mut item, true) {
            Ok(bytes) => bytes,
            Err(refused) => return Ok(Err(refused)),
        };
        match self.items.try_lock() {
            Ok(buffer) => Ok(self.insert(buffer, item, bytes, true)),
            Err(_) => {
                self.budget.unreserve_item(bytes);
                Err(item)
            }
        }
    }

    /// Holds the batch's lock until the returned guard is dropped, as a
    /// recording or a flush on another thread would.
    #[cfg(all(test, feature = "tracing-layer"))]
    pub(crate) async fn hold_lock(&self) -> impl Sized + '_ {
        self.items.lock().await
    }

    /// Validates `item` and takes its room in the budget: its size, or why
    /// it is refused (counted; logged later when `in_callback`).
    fn admit(&self, item: &mut T, in_callback: bool) -> Result<usize, RecordError> {
        let truncations = item
            .validate(self.common_attributes.as_deref())
            .map_err(|e| self.refuse(e, in_callback))?;
        self.refusals.truncated(truncations);
        let bytes = item.held_bytes();
        if !self.budget.try_reserve_item(bytes) {
            self.harvest.notify_one();
            return Err(self.refuse(
                RecordError::MemoryBudgetFull {
                    budget_bytes: self.budget.limit(),
                },
                in_callback,
            ));
        }
        Ok(bytes)
    }

    /// Counts and reports a refusal: logged now, or at the next flush when
    /// made inside a `tracing` callback.
    fn refuse(&self, error: RecordError, in_callback: bool) -> RecordError {
        if in_callback {
            self.refusals.refused_in_callback(error)
        } else {
            self.refusals.refused(error)
        }
    }

    /// Buffers an admitted `item` of `bytes` and lets the lock go, unless the
    /// batch is closed or full (its room in the budget is then given back).
    /// Asks for an early harvest when the batch reaches half its capacity,
    /// or holds [`EARLY_HARVEST_BYTES`]: long before it would refuse items,
    /// and while the items are still in cache.
    fn insert(
        &self,
        mut buffer: MutexGuard<'_, Buffer<T>>,
        item: T,
        bytes: usize,
        in_callback: bool,
    ) -> Result<(), RecordError> {
        let refused = if buffer.closed {
            Some(RecordError::Closed)
        } else if buffer.items.len() >= self.capacity {
            self.harvest.notify_one();
            Some(RecordError::BufferFull {
                capacity: self.capacity,
            })
        } else {
            None
        };
        if let Some(error) = refused {
            drop(buffer);
            self.budget.unreserve_item(bytes);
            return Err(self.refuse(error, in_callback));
        }
        // Half the record limit is more than 1 MiB even for the smallest
        // budget (4 MiB); the `min` keeps that true if the floor ever moves.
        let harvest_at = ((self.budget.limit() - WORK_RESERVE) / 2).min(EARLY_HARVEST_BYTES);
        let was_below = buffer.held_bytes < harvest_at;
        buffer.items.push(item);
        buffer.held_bytes += bytes;
        if buffer.items.len() == self.capacity.div_ceil(2)
            || (was_below && buffer.held_bytes >= harvest_at)
        {
            self.harvest.notify_one();
        }
        Ok(())
    }

    /// Records items already valid (the points a metric batch's flush
    /// makes from series it checked): each takes its room from the budget,
    /// and all go in under one lock; one with no room (budget, capacity, a
    /// closed batch) is refused and counted like any. Then asks the
    /// harvester for a harvest.
    pub(crate) async fn record_valid(&self, items: Vec<T>) {
        if self.off || items.is_empty() {
            return;
        }
        let mut buffer = self.items.lock().await;
        for item in items {
            let bytes = item.held_bytes();
            let refused = if buffer.closed {
                Some(RecordError::Closed)
            } else if buffer.items.len() >= self.capacity {
                Some(RecordError::BufferFull {
                    capacity: self.capacity,
                })
            } else if !self.budget.try_reserve_item(bytes) {
                Some(RecordError::MemoryBudgetFull {
                    budget_bytes: self.budget.limit(),
                })
            } else {
                None
            };
            match refused {
                Some(error) => {
                    self.refusals.refused(error);
                }
                None => {
                    buffer.items.push(item);
                    buffer.held_bytes += bytes;
                }
            }
        }
        drop(buffer);
        self.harvest.notify_one();
    }

    /// Takes every buffered item out (O(1) under the lock) with the common block.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, attrs};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().common_attributes(attrs!["host" => "web-1"]).build();
    /// logs.record(Log::new("a")).await;
    /// let (items, common) = logs.flush().await;
    /// assert_eq!(items.len(), 1);
    /// assert!(common.attributes().is_some());
    /// assert!(logs.is_empty().await); // the batch starts over
    /// # }
    /// ```
    pub async fn flush(&self) -> (Vec<T>, Common) {
        self.take().await.release(&self.budget)
    }

    async fn take(&self) -> Taken<T> {
        self.refusals.next_interval();
        let (items, held_bytes) = {
            let mut buffer = self.items.lock().await;
            let held = std::mem::take(&mut buffer.held_bytes);
            (std::mem::take(&mut buffer.items), held)
        };
        Taken {
            items,
            common: Common::new().with_shared_attributes(self.common_attributes.clone()),
            held: HeldBytes::adopt(Some(self.budget.clone()), held_bytes),
        }
    }

    /// What the pipeline holds in memory now (this batch, and what its
    /// harvester has taken from it and not yet sent), against its budget.
    ///
    /// ```
    /// use newrelic_telemetry::{Event, EventBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let events = EventBatch::new();
    /// events.record(Event::new("Order").with_attribute("sku", "A-1")).await;
    /// assert_eq!(events.memory().held_items, 1);
    /// events.flush().await; // the caller holds the items now, not the pipeline
    /// assert_eq!((events.memory().held_items, events.memory().held_bytes), (0, 0));
    /// # }
    /// ```
    pub fn memory(&self) -> MemoryStats {
        self.budget.snapshot()
    }

    /// How many items are buffered.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// logs.record(Log::new("a")).await;
    /// logs.record(Log::new("b")).await;
    /// assert_eq!(logs.len().await, 2);
    /// # }
    /// ```
    pub async fn len(&self) -> usize {
        self.items.lock().await.items.len()
    }

    /// Refuses new items from now on ([`RecordError::Closed`], counted); what
    /// is buffered stays for the next flush. A harvester closes its batch
    /// before its final flush, so nothing recorded later is lost unnoticed.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// logs.record(Log::new("kept")).await;
    /// logs.close().await;
    /// assert_eq!(logs.try_record(Log::new("late")).await, Err(RecordError::Closed));
    /// assert_eq!(logs.flush().await.0.len(), 1); // what was buffered stays
    /// # }
    /// ```
    pub async fn close(&self) {
        self.items.lock().await.closed = true;
    }

    /// Whether nothing is buffered.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// assert!(logs.is_empty().await);
    /// logs.record(Log::new("a")).await;
    /// assert!(!logs.is_empty().await);
    /// # }
    /// ```
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// What the batch refused or changed since it was created.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// logs.try_record(Log::new("ok").with_attribute("", 1)).await.unwrap_err(); // empty key
    /// assert_eq!(logs.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    pub fn record_stats(&self) -> RecordStats {
        self.refusals.counts.snapshot()
    }

    /// The common attributes sent with every flush.
    ///
    /// ```
    /// use newrelic_telemetry::{SpanBatch, attrs};
    ///
    /// let spans = SpanBatch::builder().common_attributes(attrs!["service.name" => "shop"]).build();
    /// assert_eq!(spans.common_attributes().unwrap().len(), 1);
    /// ```
    pub fn common_attributes(&self) -> Option<&Attributes> {
        self.common_attributes.as_deref()
    }
}

impl<T: BatchItem> super::sealed::Sealed for ItemBatch<T> {}

impl<T: BatchItem> Batch for ItemBatch<T> {
    type Item = T;

    fn flush(&self) -> impl std::future::Future<Output = (Vec<T>, Common)> + Send {
        ItemBatch::flush(self)
    }

    fn harvest_requested(&self) -> impl std::future::Future<Output = ()> + Send {
        self.harvest.notified()
    }

    fn close(&self) -> impl std::future::Future<Output = ()> + Send {
        ItemBatch::close(self)
    }

    fn record_stats(&self) -> RecordStats {
        self.refusals.counts.snapshot()
    }

    fn take(&self) -> impl std::future::Future<Output = Taken<T>> + Send {
        ItemBatch::take(self)
    }

    async fn abandon(&self) {
        drop(ItemBatch::take(self).await);
    }

    fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }
}
