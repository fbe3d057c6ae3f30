//! Handles bound to one series: validated once when made, then recording
//! with no lock, no allocation and no `.await`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::series::{
    CellArc, CountState, DistributionState, GaugeState, Series, Shared, SummaryState,
};
use crate::attributes::Attributes;
use crate::metric::Summary;

macro_rules! handle_common {
    ($handle:ident, $state:ty) => {
        impl $handle {
            pub(super) fn new(series: Series, cell: CellArc<$state>, shared: Arc<Shared>) -> Self {
                $handle {
                    cell,
                    shared,
                    name: series.name,
                    attributes: series.attributes,
                }
            }

            /// The series' name.
            pub fn name(&self) -> &str {
                &self.name
            }

            /// The series' attributes, as validated when the handle was made.
            pub fn attributes(&self) -> &Attributes {
                &self.attributes
            }

            /// Whether a value can be recorded now: the series is finite so
            /// far and the batch is not closed.
            #[inline(always)]
            fn open(&self, value: f64) -> bool {
                if !value.is_finite() {
                    self.shared.refuse_value(&self.name);
                    return false;
                }
                if self.shared.closed.load(Ordering::Relaxed) {
                    self.shared.refuse_closed();
                    return false;
                }
                true
            }
        }

        impl Clone for $handle {
            fn clone(&self) -> Self {
                // One more handle keeps the series in the batch.
                self.cell.bind();
                $handle {
                    cell: self.cell.clone(),
                    shared: self.shared.clone(),
                    name: self.name.clone(),
                    attributes: self.attributes.clone(),
                }
            }
        }

        impl Drop for $handle {
            fn drop(&mut self) {
                self.cell.unbind();
            }
        }

        impl std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("name", &&*self.name)
                    .field("attributes", &self.attributes)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A count series bound once: [`add`](Self::add) is synchronous, takes no
/// lock and allocates nothing.
///
/// Made by [`MetricBatch::counter`](crate::MetricBatch::counter). Cheap to
/// clone (clones share the series), `Send` and `Sync`, so it can live in a
/// struct, a `Drop` guard or a callback, and be used from sync code. The
/// series stays in the batch for as long as a handle to it lives; each flush
/// sends what was added since the previous one (if anything was) and starts
/// again from zero.
///
/// ```
/// use newrelic_telemetry::{Metric, MetricBatch};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let batch = MetricBatch::new();
/// let hits = batch.counter("cache.hits", [("cache", "users")]).await?;
/// hits.add(1.0);
/// hits.clone().add(2.0); // clones share the series
///
/// let (metrics, _) = batch.flush().await;
/// match &metrics[..] {
///     [Metric::Count(c)] => assert_eq!(c.value(), 3.0),
///     other => panic!("unexpected: {other:?}"),
/// }
/// hits.add(1.0); // still bound after the flush
/// assert_eq!(batch.flush().await.0.len(), 1);
/// assert!(batch.flush().await.0.is_empty()); // nothing added: nothing sent
/// # Ok(()) }
/// ```
pub struct CounterHandle {
    cell: CellArc<CountState>,
    shared: Arc<Shared>,
    name: Arc<str>,
    attributes: Arc<Attributes>,
}

handle_common!(CounterHandle, CountState);

impl CounterHandle {
    /// Adds `value` to the count. A value that is not finite, or that would
    /// take the sum past the largest `f64`, is ignored and counted in
    /// [`RecordStats::items_dropped_invalid`](crate::batch::RecordStats::items_dropped_invalid);
    /// after the batch is closed, values are ignored and counted in
    /// [`RecordStats::items_dropped_closed`](crate::batch::RecordStats::items_dropped_closed).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let errors = batch.counter("errors", ()).await.unwrap();
    /// errors.add(1.0);
    /// errors.add(f64::NAN); // ignored, counted
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// let (metrics, _) = batch.flush().await;
    /// assert_eq!(metrics.len(), 1);
    /// # }
    /// ```
    #[inline]
    pub fn add(&self, value: f64) {
        if !self.open(value) {
            return;
        }
        if self.cell.state.add(value) {
            self.cell.touch(&self.shared.budget);
        } else {
            self.shared.refuse_overflow(&self.name);
        }
    }
}

/// A gauge series bound once: [`set`](Self::set) is synchronous, takes no
/// lock and allocates nothing.
///
/// Made by [`MetricBatch::gauge`](crate::MetricBatch::gauge); cheap to clone,
/// `Send` and `Sync`. A flush sends the last value set since the previous
/// flush, with the time it was set; a gauge not set in an interval is not
/// sent.
///
/// ```
/// use newrelic_telemetry::{Metric, MetricBatch};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let batch = MetricBatch::new();
/// let depth = batch.gauge("queue.depth", [("queue", "jobs")]).await?;
/// depth.set(4.0);
/// depth.set(7.0); // the last value wins
/// let (metrics, _) = batch.flush().await;
/// match &metrics[..] {
///     [Metric::Gauge(g)] => assert_eq!(g.value(), 7.0),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(()) }
/// ```
pub struct GaugeHandle {
    cell: CellArc<GaugeState>,
    shared: Arc<Shared>,
    name: Arc<str>,
    attributes: Arc<Attributes>,
}

handle_common!(GaugeHandle, GaugeState);

impl GaugeHandle {
    /// From now on, once set, the gauge is sent at every harvest with its
    /// last value (the `metrics` facade's gauges, which exporters that are
    /// scraped show at every scrape), not only in intervals it was set in.
    #[cfg(feature = "metrics")]
    pub(crate) fn keep_sending(&self) {
        self.cell.state.keep();
    }

    /// Sets the gauge to `value`, timestamped now (to within a few ms: on
    /// Linux, from the coarse monotonic clock). A value that is not finite is
    /// ignored and counted in
    /// [`RecordStats::items_dropped_invalid`](crate::batch::RecordStats::items_dropped_invalid).
    /// Two sets racing on one gauge from two threads leave one of the two
    /// values; its timestamp may be the other's.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let temperature = batch.gauge("temperature", ()).await.unwrap();
    /// temperature.set(21.5);
    /// let (metrics, _) = batch.flush().await;
    /// assert!(metrics[0].timestamp_ms().is_some());
    /// # }
    /// ```
    #[inline]
    pub fn set(&self, value: f64) {
        if !self.open(value) {
            return;
        }
        self.cell.state.set(value, self.shared.clock.now_ms());
        self.cell.touch(&self.shared.budget);
    }
}

/// A summary series bound once: [`record`](Self::record) is synchronous,
/// takes no lock and allocates nothing.
///
/// Made by [`MetricBatch::summary`](crate::MetricBatch::summary); cheap to
/// clone, `Send` and `Sync`. A flush sends the count, sum, min and max of the
/// observations recorded since the previous flush; each observation lands
/// whole in exactly one flush, even when recorded while the flush runs.
///
/// ```
/// use newrelic_telemetry::{Metric, MetricBatch, Summary};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let batch = MetricBatch::new();
/// let latency = batch.summary("latency.ms", [("route", "/a")]).await?;
/// latency.record(12.0);
/// latency.record(4.0);
/// let (metrics, _) = batch.flush().await;
/// match &metrics[..] {
///     [Metric::Summary(s)] => assert_eq!(s.summary(), Summary::new(2, 16.0, 4.0, 12.0)),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(()) }
/// ```
pub struct SummaryHandle {
    cell: CellArc<SummaryState>,
    shared: Arc<Shared>,
    name: Arc<str>,
    attributes: Arc<Attributes>,
}

handle_common!(SummaryHandle, SummaryState);

impl SummaryHandle {
    /// Adds one observation of `value`. A value that is not finite, or that
    /// would take the sum past the largest `f64`, is ignored and counted in
    /// [`RecordStats::items_dropped_invalid`](crate::batch::RecordStats::items_dropped_invalid).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let sizes = batch.summary("payload.bytes", ()).await.unwrap();
    /// sizes.record(512.0);
    /// sizes.record(f64::INFINITY); // ignored, counted
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    #[inline]
    pub fn record(&self, value: f64) {
        if !self.open(value) {
            return;
        }
        if self.cell.state.merge(&Summary::from_value(value)) {
            self.cell.touch(&self.shared.budget);
        } else {
            self.shared.refuse_overflow(&self.name);
        }
    }
    /// Merges a whole summary (several observations at once): the
    /// `metrics` recorder's `record_many` and what it held before binding.
    /// An invalid summary is ignored and counted like a bad value.
    #[cfg(feature = "metrics")]
    pub(crate) fn merge(&self, summary: &Summary) {
        if !summary.is_valid() {
            self.shared.refuse_summary();
            return;
        }
        if !self.open(summary.sum) {
            return;
        }
        if self.cell.state.merge(summary) {
            self.cell.touch(&self.shared.budget);
        } else {
            self.shared.refuse_overflow(&self.name);
        }
    }
}

/// A distribution series bound once: [`record`](Self::record) is
/// synchronous and takes no lock, and allocates nothing once the values'
/// powers of two have each been seen once (a bucket page per power of two,
/// kept for the series' life). Like [`CounterHandle`] otherwise.
///
/// Made by [`MetricBatch::distribution`](crate::MetricBatch::distribution).
/// Each flush puts a [`DistributionPoint`](crate::distribution::DistributionPoint)
/// of what was recorded since the previous one into
/// [`MetricBatch::distributions`](crate::MetricBatch::distributions).
///
/// ```
/// use newrelic_telemetry::MetricBatch;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let batch = MetricBatch::new();
/// let latency = batch.distribution("latency.ms", [("route", "/a")]).await?;
/// for ms in 1..=1000 {
///     latency.record(f64::from(ms));
/// }
/// batch.flush().await;
/// let (points, _) = batch.distributions().flush().await;
/// let d = points[0].distribution();
/// assert_eq!((d.count(), d.min(), d.max()), (1000, Some(1.0), Some(1000.0)));
/// let p90 = d.quantile(0.9).unwrap();
/// assert!((p90 - 900.0).abs() / 900.0 < 0.05, "{p90}");
/// # Ok(()) }
/// ```
pub struct DistributionHandle {
    cell: CellArc<DistributionState>,
    shared: Arc<Shared>,
    name: Arc<str>,
    attributes: Arc<Attributes>,
}

handle_common!(DistributionHandle, DistributionState);

impl DistributionHandle {
    /// Records one value. A value that is not finite, or that would take
    /// the sum past the largest `f64`, is ignored and counted in
    /// [`RecordStats::items_dropped_invalid`](crate::batch::RecordStats::items_dropped_invalid).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let sizes = batch.distribution("payload.bytes", ()).await.unwrap();
    /// sizes.record(512.0);
    /// sizes.record(f64::NAN); // ignored, counted
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    #[inline]
    pub fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    /// Records `value` `count` times (`metrics`' `record_many`).
    #[inline]
    pub(crate) fn record_many(&self, value: f64, count: u64) {
        if count == 0 || !self.open(value) {
            return;
        }
        if self.cell.state.record_n(value, count) {
            self.cell.touch(&self.shared.budget);
        } else {
            self.shared.refuse_overflow(&self.name);
        }
    }

    /// Adds what the `metrics` recorder held before binding.
    #[cfg(feature = "metrics")]
    pub(crate) fn merge(&self, held: &crate::distribution::Distribution) {
        if held.count() == 0 || !self.open(held.sum()) {
            return;
        }
        if self.cell.state.merge(held) {
            self.cell.touch(&self.shared.budget);
        } else {
            self.shared.refuse_overflow(&self.name);
        }
    }
}
