//! Buffering batches for events, logs and spans.

use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::{Mutex, Notify};

use super::{Batch, RecordCounters, RecordStats};
use crate::attributes::Attributes;
use crate::common::Common;
use crate::error::RecordError;
use crate::event::Event;
use crate::log::Log;
use crate::span::Span;
use crate::validate::{
    EVENT_LIMITS, LOG_LIMITS, SPAN_LIMITS, check_attributes, check_event_type, check_merged_count,
    sanitize_common,
};

/// Items a batch holds at most by default; see [`ItemBatchBuilder::capacity`].
///
/// ```
/// assert_eq!(newrelic_telemetry::DEFAULT_CAPACITY, 50_000);
/// ```
pub const DEFAULT_CAPACITY: usize = 50_000;

/// A batch of [`Event`]s. Its common attributes are merged into every event
/// when it is sent (the Event API has no common block).
///
/// ```
/// use newrelic_telemetry::{Event, EventBatch, attributes};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let events = EventBatch::builder().common_attributes(attributes! { "env" => "prod" }).build();
/// events.record(Event::new("Order").with_attribute("total", 42.0)).await.unwrap();
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
/// logs.record(Log::new("started").with_level("INFO")).await.unwrap();
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
/// spans.record(Span::new("GET /orders").finish()).await.unwrap();
/// assert_eq!(spans.len().await, 1);
/// # }
/// ```
pub type SpanBatch = ItemBatch<Span>;

mod private {
    use crate::attributes::Attributes;
    use crate::error::RecordError;

    /// Validation of an item before it is buffered.
    pub trait Checked {
        /// Common attributes cleaned to this API's limits.
        fn sanitize_common(attributes: Attributes) -> Attributes;
        /// Validates the item (with the common attributes it will be sent
        /// with) and truncates over-long values; returns how many values were
        /// truncated.
        fn check(&mut self, common: Option<&Attributes>) -> Result<u64, RecordError>;
    }
}

/// An item type an [`ItemBatch`] can hold: [`Event`], [`Log`] or [`Span`]. Sealed.
///
/// ```
/// use newrelic_telemetry::{BatchItem, ItemBatch, Log, Span};
///
/// fn small_batch<T: BatchItem>() -> ItemBatch<T> {
///     ItemBatch::builder().capacity(1_000).build()
/// }
/// let logs = small_batch::<Log>();
/// let spans = small_batch::<Span>();
/// assert!(logs.common_attributes().is_none() && spans.common_attributes().is_none());
/// ```
pub trait BatchItem: private::Checked + Send + Sync + 'static {}
impl BatchItem for Event {}
impl BatchItem for Log {}
impl BatchItem for Span {}

impl private::Checked for Event {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &EVENT_LIMITS)
    }
    fn check(&mut self, common: Option<&Attributes>) -> Result<u64, RecordError> {
        check_event_type(self.event_type())?;
        // Events carry the common attributes themselves (there is no common
        // block), so the limit applies to the merged set.
        check_merged_count(self.attributes(), common, &EVENT_LIMITS)?;
        check_attributes(self.attributes_mut(), &EVENT_LIMITS)
    }
}

impl private::Checked for Log {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &LOG_LIMITS)
    }
    fn check(&mut self, _common: Option<&Attributes>) -> Result<u64, RecordError> {
        check_attributes(self.attributes_mut(), &LOG_LIMITS)
    }
}

impl private::Checked for Span {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &SPAN_LIMITS)
    }
    fn check(&mut self, _common: Option<&Attributes>) -> Result<u64, RecordError> {
        if self.name().is_empty() {
            return Err(RecordError::EmptyName);
        }
        if self.id().is_empty() || self.trace_id().is_empty() {
            return Err(RecordError::EmptySpanId);
        }
        let mut truncations = check_attributes(self.attributes_mut(), &SPAN_LIMITS)?;
        for event in self.events_mut() {
            if event.name().is_empty() {
                return Err(RecordError::EmptyName);
            }
            truncations += check_attributes(event.attributes_mut(), &SPAN_LIMITS)?;
        }
        Ok(truncations)
    }
}

/// Validates an item handed straight to a client.
pub(crate) fn check_item<T: BatchItem>(
    item: &mut T,
    common: Option<&Attributes>,
) -> Result<u64, RecordError> {
    item.check(common)
}

/// The items and whether the batch still takes new ones, under one lock so
/// that closing and recording are ordered.
struct Buffer<T> {
    items: Vec<T>,
    closed: bool,
}

/// A batch that buffers items of one type until the next harvest.
///
/// Use it through its aliases [`EventBatch`], [`LogBatch`] and [`SpanBatch`].
/// Items are validated when recorded (see [`RecordError`]); when the batch holds
/// its capacity, it asks its harvester for an early harvest and drops new items
/// (counted in [`RecordStats::dropped_buffer_full`]) until then: the items
/// already buffered are never the ones lost.
///
/// ```
/// use newrelic_telemetry::{Event, EventBatch};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let events = Arc::new(EventBatch::new());
/// events.record(Event::new("Purchase").with_attribute("amount", 12.5)).await?;
/// let (items, _common) = events.flush().await;
/// assert_eq!(items.len(), 1);
/// # Ok(()) }
/// ```
pub struct ItemBatch<T> {
    items: Mutex<Buffer<T>>,
    capacity: usize,
    common_attributes: Option<Arc<Attributes>>,
    counters: RecordCounters,
    harvest: Notify,
}

impl<T> std::fmt::Debug for ItemBatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemBatch")
            .field("item", &std::any::type_name::<T>())
            .field("capacity", &self.capacity)
            .field("common_attributes", &self.common_attributes)
            .finish_non_exhaustive()
    }
}

/// Configures an [`ItemBatch`].
///
/// ```
/// use newrelic_telemetry::{attributes, LogBatch};
///
/// let logs = LogBatch::builder()
///     .common_attributes(attributes! { "service.name" => "checkout" })
///     .capacity(10_000)
///     .build();
/// assert_eq!(logs.common_attributes(), Some(&attributes! { "service.name" => "checkout" }));
/// ```
#[derive(Debug, Clone)]
pub struct ItemBatchBuilder<T> {
    common_attributes: Option<Attributes>,
    capacity: usize,
    item: PhantomData<fn() -> T>,
}

impl<T: BatchItem> ItemBatchBuilder<T> {
    /// Attributes every item shares: sent in the common block (logs, spans) or
    /// merged into each event. Invalid pairs are removed with a warning.
    ///
    /// ```
    /// use newrelic_telemetry::{EventBatch, attributes};
    ///
    /// let events = EventBatch::builder().common_attributes(attributes! { "env" => "prod" }).build();
    /// assert_eq!(events.common_attributes().unwrap().len(), 1);
    /// ```
    pub fn common_attributes(mut self, attributes: Attributes) -> Self {
        self.common_attributes = Some(attributes);
        self
    }

    /// The most items the batch buffers between harvests (default 50,000). At
    /// half of it the batch asks for an early harvest.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().capacity(1).build();
    /// logs.record(Log::new("one")).await.unwrap();
    /// assert_eq!(logs.record(Log::new("two")).await, Err(RecordError::BufferFull { capacity: 1 }));
    /// # }
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
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
                closed: false,
            }),
            capacity: self.capacity,
            common_attributes: self
                .common_attributes
                .map(T::sanitize_common)
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            counters: RecordCounters::default(),
            harvest: Notify::new(),
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
            item: PhantomData,
        }
    }

    /// Validates `item` and buffers it.
    ///
    /// Over-long string values are truncated to the API's limit (counted in
    /// [`RecordStats::values_truncated`]); anything else the API would reject is
    /// refused with a [`RecordError`].
    ///
    /// ```
    /// # use newrelic_telemetry::{Log, LogBatch};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// logs.record(Log::new("started").with_level("INFO")).await.unwrap();
    /// assert_eq!(logs.len().await, 1);
    /// # }
    /// ```
    pub async fn record(&self, mut item: T) -> Result<(), RecordError> {
        let truncations = item
            .check(self.common_attributes.as_deref())
            .map_err(|e| self.counters.refused(e))?;
        self.counters.truncated(truncations);
        let mut buffer = self.items.lock().await;
        if buffer.closed {
            drop(buffer);
            return Err(self.counters.refused(RecordError::Closed));
        }
        let items = &mut buffer.items;
        if items.len() >= self.capacity {
            drop(buffer);
            self.harvest.notify_one();
            return Err(self.counters.refused(RecordError::BufferFull {
                capacity: self.capacity,
            }));
        }
        items.push(item);
        if items.len() == self.capacity.div_ceil(2) {
            self.harvest.notify_one();
        }
        Ok(())
    }

    /// Takes every buffered item out (O(1) under the lock) with the common block.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch, attributes};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().common_attributes(attributes! { "host" => "web-1" }).build();
    /// logs.record(Log::new("a")).await.unwrap();
    /// let (items, common) = logs.flush().await;
    /// assert_eq!(items.len(), 1);
    /// assert!(common.attributes().is_some());
    /// assert!(logs.is_empty().await); // the batch starts over
    /// # }
    /// ```
    pub async fn flush(&self) -> (Vec<T>, Common) {
        let items = std::mem::take(&mut self.items.lock().await.items);
        (
            items,
            Common::new().with_shared_attributes(self.common_attributes.clone()),
        )
    }

    /// How many items are buffered.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::new();
    /// logs.record(Log::new("a")).await.unwrap();
    /// logs.record(Log::new("b")).await.unwrap();
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
    /// logs.record(Log::new("kept")).await.unwrap();
    /// logs.close().await;
    /// assert_eq!(logs.record(Log::new("late")).await, Err(RecordError::Closed));
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
    /// logs.record(Log::new("a")).await.unwrap();
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
    /// logs.record(Log::new("ok").with_attribute("", 1)).await.unwrap_err(); // empty key
    /// assert_eq!(logs.record_stats().rejected_invalid, 1);
    /// # }
    /// ```
    pub fn record_stats(&self) -> RecordStats {
        self.counters.snapshot()
    }

    /// The common attributes sent with every flush.
    ///
    /// ```
    /// use newrelic_telemetry::{SpanBatch, attributes};
    ///
    /// let spans = SpanBatch::builder().common_attributes(attributes! { "service.name" => "shop" }).build();
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
        self.counters.snapshot()
    }
}
