//! Delivery counters: what was sent, retried and dropped, and why.

use std::sync::atomic::{AtomicU64, Ordering};

use super::report::DropReason;

/// A snapshot of a client's delivery counters, readable at any time with
/// [`Client::stats`](crate::Client::stats).
///
/// Every item handed to a client ends up counted once, either in `items_sent`
/// or in one of the `items_dropped_*` counters (items still waiting or in
/// flight are in neither yet).
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Event, EventClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// client.send(Event::new("Purchase")).await?;
///
/// let stats = client.stats();
/// assert_eq!((stats.payloads_sent, stats.items_sent, stats.retries), (1, 1, 0));
/// assert_eq!(stats.items_dropped(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryStats {
    /// Payloads the API accepted.
    pub payloads_sent: u64,
    /// Items in those payloads.
    pub items_sent: u64,
    /// Compressed bytes in those payloads.
    pub bytes_sent: u64,
    /// Retries made (each further attempt at a payload counts once).
    pub retries: u64,
    /// Payloads split in two because they were too large.
    pub payloads_split: u64,
    /// Items refused before sending because they broke an API rule.
    pub items_dropped_invalid: u64,
    /// Items dropped because the API rejected their payload (400, 401, 403,
    /// 404, 405, 409, 410, 411).
    pub items_dropped_rejected: u64,
    /// Items dropped because a payload of one item was still too large.
    pub items_dropped_too_large: u64,
    /// Items dropped because their payload's retries or time budget ran out.
    pub items_dropped_retries_exhausted: u64,
    /// Items dropped because the queue of payloads waiting to be sent was full.
    pub items_dropped_queue_full: u64,
    /// Items dropped because shutdown reached its deadline before they were sent.
    pub items_dropped_shutdown: u64,
    /// Items dropped because they could not be encoded.
    pub items_dropped_encoding: u64,
}

impl DeliveryStats {
    /// All items dropped, for whatever reason.
    ///
    /// ```
    /// use newrelic_telemetry::DeliveryStats;
    ///
    /// let stats = DeliveryStats::default();
    /// assert_eq!(stats.items_dropped(), 0);
    /// ```
    pub fn items_dropped(&self) -> u64 {
        self.items_dropped_invalid
            + self.items_dropped_rejected
            + self.items_dropped_too_large
            + self.items_dropped_retries_exhausted
            + self.items_dropped_queue_full
            + self.items_dropped_shutdown
            + self.items_dropped_encoding
    }
}

#[derive(Debug, Default)]
pub(crate) struct DeliveryCounters {
    payloads_sent: AtomicU64,
    items_sent: AtomicU64,
    bytes_sent: AtomicU64,
    retries: AtomicU64,
    payloads_split: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_too_large: AtomicU64,
    dropped_retries_exhausted: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_shutdown: AtomicU64,
    dropped_encoding: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl DeliveryCounters {
    pub(crate) fn sent(&self, items: usize, bytes: usize) {
        add(&self.payloads_sent, 1);
        add(&self.items_sent, items);
        add(&self.bytes_sent, bytes);
    }

    pub(crate) fn retried(&self) {
        add(&self.retries, 1);
    }

    pub(crate) fn split(&self) {
        add(&self.payloads_split, 1);
    }

    pub(crate) fn dropped(&self, reason: &DropReason, items: usize) {
        let counter = match reason {
            DropReason::Invalid(_) => &self.dropped_invalid,
            DropReason::Rejected { .. } => &self.dropped_rejected,
            DropReason::TooLarge { .. } => &self.dropped_too_large,
            DropReason::RetriesExhausted { .. } => &self.dropped_retries_exhausted,
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::ShutdownDeadline => &self.dropped_shutdown,
            DropReason::Encoding { .. } => &self.dropped_encoding,
        };
        add(counter, items);
    }

    pub(crate) fn snapshot(&self) -> DeliveryStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeliveryStats {
            payloads_sent: get(&self.payloads_sent),
            items_sent: get(&self.items_sent),
            bytes_sent: get(&self.bytes_sent),
            retries: get(&self.retries),
            payloads_split: get(&self.payloads_split),
            items_dropped_invalid: get(&self.dropped_invalid),
            items_dropped_rejected: get(&self.dropped_rejected),
            items_dropped_too_large: get(&self.dropped_too_large),
            items_dropped_retries_exhausted: get(&self.dropped_retries_exhausted),
            items_dropped_queue_full: get(&self.dropped_queue_full),
            items_dropped_shutdown: get(&self.dropped_shutdown),
            items_dropped_encoding: get(&self.dropped_encoding),
        }
    }
}
