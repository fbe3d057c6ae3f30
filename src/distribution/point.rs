//! A distribution point: one series' distribution over one interval, what
//! a metric batch's flush makes of a distribution series and what the OTLP
//! client sends as an exponential histogram point.

use std::sync::Arc;
use std::time::Duration;

use super::Distribution;
use crate::attributes::Attributes;
use crate::time::{interval_millis, now_ms};

/// One series' distribution over one interval (delta temporality): its
/// name, attributes, the interval and the values recorded in it.
///
/// A [`MetricBatch`](crate::MetricBatch) makes one per distribution series
/// written to at each flush, into its
/// [`distributions`](crate::MetricBatch::distributions) batch; one can also
/// be built from a [`Distribution`] aggregated elsewhere.
///
/// ```
/// use std::time::Duration;
/// use newrelic_telemetry::distribution::{Distribution, DistributionPoint};
/// use newrelic_telemetry::attrs;
///
/// let mut latency = Distribution::new();
/// for ms in [12.0, 15.0, 230.0] {
///     latency.record(ms)?;
/// }
/// let point = DistributionPoint::new("http.server.duration", latency, Duration::from_secs(10))
///     .with_attributes(attrs!["route" => "/orders"]);
/// assert_eq!(point.name(), "http.server.duration");
/// assert_eq!(point.distribution().count(), 3);
/// assert_eq!(point.end_ms() - point.start_ms(), 10_000);
/// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DistributionPoint {
    name: Arc<str>,
    attributes: Arc<Attributes>,
    start_ms: u64,
    end_ms: u64,
    distribution: Distribution,
}

impl DistributionPoint {
    /// A point of `distribution` over the `interval` ending now, with no
    /// attributes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use newrelic_telemetry::distribution::{Distribution, DistributionPoint};
    ///
    /// let point = DistributionPoint::new("queue.wait", Distribution::new(), Duration::from_secs(5));
    /// assert!(point.attributes().is_empty());
    /// assert_eq!(point.end_ms() - point.start_ms(), 5_000);
    /// ```
    pub fn new(name: impl Into<Arc<str>>, distribution: Distribution, interval: Duration) -> Self {
        let end_ms = now_ms();
        DistributionPoint {
            name: name.into(),
            attributes: Arc::default(),
            start_ms: end_ms.saturating_sub(interval_millis(interval)),
            end_ms,
            distribution,
        }
    }

    /// A point over the interval a flush closed. Two flushes within one
    /// millisecond close an interval of none: the point then ends a
    /// millisecond after it starts, since OTLP readers expect a point's time
    /// to come after its start (the next point still starts at the flush, so
    /// the two overlap by that millisecond).
    pub(crate) fn in_interval(
        name: Arc<str>,
        attributes: Arc<Attributes>,
        start_ms: u64,
        end_ms: u64,
        distribution: Distribution,
    ) -> Self {
        DistributionPoint {
            name,
            attributes,
            start_ms,
            end_ms: end_ms.max(start_ms.saturating_add(1)),
            distribution,
        }
    }

    /// Replaces the point's attributes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use newrelic_telemetry::distribution::{Distribution, DistributionPoint};
    /// use newrelic_telemetry::attrs;
    ///
    /// let point = DistributionPoint::new("q", Distribution::new(), Duration::from_secs(1))
    ///     .with_attributes(attrs!["queue" => "emails", "shard" => 3]);
    /// assert_eq!(point.attributes().len(), 2);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        self.attributes = Arc::new(attributes.into());
        self
    }

    /// The series' name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The series' attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    pub(crate) fn shared_attributes(&self) -> &Arc<Attributes> {
        &self.attributes
    }

    /// When the interval started, in milliseconds since the Unix epoch.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// When it ended, in milliseconds since the Unix epoch.
    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    /// The values recorded in the interval.
    pub fn distribution(&self) -> &Distribution {
        &self.distribution
    }

    pub(crate) fn attributes_mut(&mut self) -> &mut Attributes {
        Arc::make_mut(&mut self.attributes)
    }
}

impl crate::budget::HeapSize for DistributionPoint {
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + crate::budget::arc_str_bytes(self.name.len())
            + 2 * std::mem::size_of::<usize>()
            + self.attributes.held_bytes()
            + self.distribution.held_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_over_an_interval_of_no_time_still_ends_after_it_starts() {
        let point = |start, end| {
            DistributionPoint::in_interval(
                Arc::from("d"),
                Arc::default(),
                start,
                end,
                Distribution::new(),
            )
        };
        let same_millisecond = point(1_000, 1_000);
        assert_eq!(
            (same_millisecond.start_ms(), same_millisecond.end_ms()),
            (1_000, 1_001)
        );
        let ordinary = point(1_000, 6_000);
        assert_eq!((ordinary.start_ms(), ordinary.end_ms()), (1_000, 6_000));
    }
}
