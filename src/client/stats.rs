//! Delivery counters: what was sent, retried and dropped, and why.

use super::report::DropReason;

crate::counters::counters! {
    /// A snapshot of a client's delivery counters, readable at any time with
    /// [`Client::stats`](crate::client::Client::stats).
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
    pub struct DeliveryStats / DeliveryCounters {
        /// Payloads the API accepted.
        payloads_sent,
        /// Items in those payloads.
        items_sent,
        /// Compressed bytes in those payloads.
        bytes_sent,
        /// Retries made (each further attempt at a payload counts once).
        retries,
        /// Payloads split in two because they were too large.
        payloads_split,
        /// Items refused before sending because they broke an API rule.
        items_dropped_invalid,
        /// Items dropped because the API rejected their payload (400, 401, 403,
        /// 404, 405, 409, 410, 411), or refused them in its answer to an
        /// accepted one (OTLP's partial success).
        items_dropped_rejected,
        /// Items dropped because a payload of one item was still too large.
        items_dropped_too_large,
        /// Items dropped because their payload's retries or time budget ran out.
        items_dropped_retries_exhausted,
        /// Items dropped because the queue of payloads waiting to be sent was full.
        items_dropped_queue_full,
        /// Items dropped because shutdown reached its deadline before they were sent.
        items_dropped_shutdown,
        /// Items dropped because they could not be encoded.
        items_dropped_encoding,
        /// Items not sent because telemetry is disabled
        /// ([`TelemetryBuilder::enabled`](crate::TelemetryBuilder::enabled)):
        /// recorded, validated and counted, then let go without any request.
        /// Not a loss, so not part of [`items_dropped`](Self::items_dropped).
        items_discarded,
    }
}

impl DeliveryStats {
    /// All items dropped, for whatever reason.
    ///
    /// ```
    /// use newrelic_telemetry::client::DeliveryStats;
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

impl DeliveryCounters {
    pub(crate) fn sent(&self, items: usize, bytes: usize) {
        Self::add(&self.payloads_sent, 1);
        Self::add(&self.items_sent, items as u64);
        Self::add(&self.bytes_sent, bytes as u64);
    }

    pub(crate) fn retried(&self) {
        Self::add(&self.retries, 1);
    }

    pub(crate) fn split(&self) {
        Self::add(&self.payloads_split, 1);
    }

    pub(crate) fn dropped(&self, reason: &DropReason, items: usize) {
        let counter = match reason {
            DropReason::Invalid(_) => &self.items_dropped_invalid,
            DropReason::Rejected { .. } | DropReason::PartiallyRejected { .. } => {
                &self.items_dropped_rejected
            }
            DropReason::TooLarge { .. } => &self.items_dropped_too_large,
            DropReason::RetriesExhausted { .. } => &self.items_dropped_retries_exhausted,
            DropReason::QueueFull => &self.items_dropped_queue_full,
            DropReason::ShutdownDeadline => &self.items_dropped_shutdown,
            DropReason::Encoding { .. } => &self.items_dropped_encoding,
        };
        Self::add(counter, items as u64);
    }
}
