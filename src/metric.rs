//! Metric data types: counts, gauges and summaries.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::attributes::Attributes;
use crate::time::{interval_millis, millis_since_epoch, now_ms};

/// The three metric types of the Metric API.
///
/// ```
/// use newrelic_telemetry::{CountMetric, Metric, MetricKind};
/// use std::time::Duration;
///
/// let m: Metric = CountMetric::new("jobs", 1.0, Duration::from_secs(5)).into();
/// assert_eq!(m.kind(), MetricKind::Count);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A sum over an interval.
    Count,
    /// A value at a point in time.
    Gauge,
    /// Count, sum, min and max of observations over an interval.
    Summary,
    /// Observations over an interval counted in exponential buckets, from
    /// which percentiles are read: sent over OTLP, not to the Metric API
    /// (see [`MetricBatch::record_distribution`](crate::MetricBatch::record_distribution)).
    Distribution,
}

impl MetricKind {
    /// The `type` field on the wire.
    ///
    /// ```
    /// use newrelic_telemetry::MetricKind;
    ///
    /// assert_eq!(MetricKind::Summary.as_str(), "summary");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Count => "count",
            MetricKind::Gauge => "gauge",
            MetricKind::Summary => "summary",
            MetricKind::Distribution => "distribution",
        }
    }
}

/// A number a metric can record: any integer or float. Recording calls take
/// `impl MetricValue`, so `record_count("jobs", 1, ..)` and
/// `record_gauge("queue.depth", queue.len(), ..)` compile as written. Values
/// travel as 64-bit floats (the Metric API's numbers): integers beyond 2^53
/// lose their lowest digits.
///
/// ```
/// use newrelic_telemetry::{MetricBatch, MetricValue};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let batch = MetricBatch::new();
/// let queue: Vec<u32> = vec![1, 2, 3];
/// batch.record_count("jobs", 1, ()).await;
/// batch.record_count("jobs", 2_u64, ()).await;
/// batch.record_gauge("queue.depth", queue.len(), ()).await;
/// batch.record_summary("latency.ms", 12.5_f32, ()).await;
/// let (metrics, _) = batch.flush().await;
/// assert_eq!(metrics.len(), 3);
/// assert_eq!(7_u8.to_f64(), 7.0);
/// # }
/// ```
pub trait MetricValue: Copy + sealed::Sealed {
    /// The value as the Metric API carries it.
    fn to_f64(self) -> f64;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! metric_value {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl MetricValue for $t {
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
metric_value!(
    f64, f32, i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize
);

/// Count, sum, minimum and maximum of a set of observations.
///
/// ```
/// use newrelic_telemetry::Summary;
///
/// let mut s = Summary::from_value(2.0);
/// s.merge(&Summary::from_value(1.0));
/// assert_eq!(s, Summary::new(2, 3.0, 1.0, 2.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Summary {
    /// A summary from pre-computed fields.
    ///
    /// ```
    /// use newrelic_telemetry::Summary;
    ///
    /// let s = Summary::new(3, 12.0, 2.0, 6.0);
    /// assert_eq!(s.sum / s.count as f64, 4.0);
    /// ```
    pub fn new(count: u64, sum: f64, min: f64, max: f64) -> Self {
        Summary {
            count,
            sum,
            min,
            max,
        }
    }

    /// The summary of one observation.
    ///
    /// ```
    /// use newrelic_telemetry::Summary;
    ///
    /// assert_eq!(Summary::from_value(2.5), Summary::new(1, 2.5, 2.5, 2.5));
    /// ```
    pub fn from_value(value: f64) -> Self {
        Summary::new(1, value, value, value)
    }

    /// Adds `other`'s observations to this summary.
    ///
    /// ```
    /// use newrelic_telemetry::Summary;
    ///
    /// let mut a = Summary::new(2, 3.0, 1.0, 2.0);
    /// a.merge(&Summary::new(1, 10.0, 10.0, 10.0));
    /// assert_eq!(a, Summary::new(3, 13.0, 1.0, 10.0));
    /// ```
    pub fn merge(&mut self, other: &Summary) {
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Adds one observation.
    ///
    /// ```
    /// use newrelic_telemetry::Summary;
    ///
    /// let mut s = Summary::from_value(4.0);
    /// s.observe(1.0);
    /// assert_eq!((s.count, s.sum, s.min, s.max), (2, 5.0, 1.0, 4.0));
    /// ```
    pub fn observe(&mut self, value: f64) {
        self.count = self.count.saturating_add(1);
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.count > 0
            && self.sum.is_finite()
            && self.min.is_finite()
            && self.max.is_finite()
            && self.min <= self.max
    }
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("count", &self.count)?;
        map.serialize_entry("sum", &self.sum)?;
        map.serialize_entry("min", &self.min)?;
        map.serialize_entry("max", &self.max)?;
        map.end()
    }
}

/// Whether a batch built the metric from a series it validated when it was
/// recorded, with nothing changed since: a client sending it need not
/// validate it again. Never part of a metric's equality.
#[derive(Clone, Copy, Debug, Default)]
struct Checked(bool);

impl PartialEq for Checked {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The fields every metric type has.
#[derive(Clone, Debug, PartialEq)]
struct Head {
    name: Arc<str>,
    attributes: Arc<Attributes>,
    checked: Checked,
    /// Interval start for counts and summaries, time of the value for gauges.
    timestamp_ms: Option<u64>,
    interval_ms: Option<u64>,
}

impl Head {
    fn new(name: Arc<str>) -> Self {
        Head {
            name,
            attributes: Arc::default(),
            checked: Checked(false),
            timestamp_ms: None,
            interval_ms: None,
        }
    }

    /// Made by a batch from a validated series.
    fn checked(name: Arc<str>, attributes: Arc<Attributes>) -> Self {
        Head {
            attributes,
            checked: Checked(true),
            ..Head::new(name)
        }
    }

    /// Moves the interval so that it ends at `end`.
    fn end_at(&mut self, end: SystemTime) {
        self.checked = Checked(false);
        let interval = self.interval_ms.unwrap_or(0);
        self.timestamp_ms = Some(millis_since_epoch(end).saturating_sub(interval));
    }

    /// Sets the interval ending now (`timestamp` is the interval's start).
    fn interval_ending_now(mut self, interval: Duration) -> Self {
        let ms = interval_millis(interval);
        self.interval_ms = Some(ms);
        self.timestamp_ms = Some(now_ms().saturating_sub(ms));
        self
    }

    fn serialize<S: Serializer>(
        &self,
        kind: MetricKind,
        value: &impl Serialize,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("name", &*self.name)?;
        map.serialize_entry("type", kind.as_str())?;
        map.serialize_entry("value", value)?;
        if let Some(ts) = self.timestamp_ms {
            map.serialize_entry("timestamp", &ts)?;
        }
        if let Some(iv) = self.interval_ms {
            map.serialize_entry("interval.ms", &iv)?;
        }
        if !self.attributes.is_empty() {
            map.serialize_entry("attributes", &*self.attributes)?;
        }
        map.end()
    }
}

macro_rules! head_accessors {
    () => {
        /// The metric's name.
        pub fn name(&self) -> &str {
            &self.head.name
        }

        /// The metric's attributes.
        pub fn attributes(&self) -> &Attributes {
            &self.head.attributes
        }

        /// Replaces the metric's attributes.
        #[must_use = "returns the changed value; the original is consumed"]
        pub fn with_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
            self.head.attributes = Arc::new(attributes.into());
            self.head.checked = Checked(false);
            self
        }

        /// Adds one attribute.
        pub fn with_attribute(
            mut self,
            key: impl Into<Arc<str>>,
            value: impl Into<crate::attributes::Value>,
        ) -> Self {
            Arc::make_mut(&mut self.head.attributes).insert(key, value);
            self.head.checked = Checked(false);
            self
        }

        /// The timestamp in milliseconds since the epoch, if the metric has its
        /// own (else it takes the common block's).
        pub fn timestamp_ms(&self) -> Option<u64> {
            self.head.timestamp_ms
        }
    };
}

/// A count: the sum of a quantity over an interval.
///
/// ```
/// use newrelic_telemetry::CountMetric;
/// use std::time::Duration;
///
/// let errors = CountMetric::new("errors", 5.0, Duration::from_secs(10))
///     .with_attribute("service", "checkout");
/// assert_eq!(errors.value(), 5.0);
/// assert_eq!(errors.interval_ms(), Some(10_000));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CountMetric {
    head: Head,
    value: f64,
}

impl CountMetric {
    /// A count of `value` over `interval`, ending now.
    ///
    /// ```
    /// use newrelic_telemetry::CountMetric;
    /// use std::time::Duration;
    ///
    /// let count = CountMetric::new("requests", 12.0, Duration::from_secs(60));
    /// assert_eq!(count.interval_ms(), Some(60_000));
    /// assert!(count.timestamp_ms().is_some()); // the interval's start
    /// ```
    pub fn new(name: impl Into<Arc<str>>, value: f64, interval: Duration) -> Self {
        CountMetric {
            head: Head::new(name.into()).interval_ending_now(interval),
            value,
        }
    }

    /// A count with neither timestamp nor interval: it takes the common block's.
    pub(crate) fn in_common_interval(
        name: Arc<str>,
        attributes: Arc<Attributes>,
        value: f64,
    ) -> Self {
        CountMetric {
            head: Head::checked(name, attributes),
            value,
        }
    }

    /// Moves the interval so that it ends at `end` (the default end is the time
    /// the metric was created).
    ///
    /// ```
    /// use newrelic_telemetry::CountMetric;
    /// use std::time::{Duration, SystemTime};
    ///
    /// let end = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    /// let count = CountMetric::new("jobs", 1.0, Duration::from_secs(10)).with_end_time(end);
    /// assert_eq!(count.timestamp_ms(), Some(90_000)); // the interval's start
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_end_time(mut self, end: SystemTime) -> Self {
        self.head.end_at(end);
        self
    }

    /// The counted value.
    ///
    /// ```
    /// use newrelic_telemetry::CountMetric;
    /// use std::time::Duration;
    ///
    /// assert_eq!(CountMetric::new("jobs", 4.0, Duration::from_secs(1)).value(), 4.0);
    /// ```
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The interval in milliseconds, if the metric has its own.
    ///
    /// ```
    /// use newrelic_telemetry::CountMetric;
    /// use std::time::Duration;
    ///
    /// assert_eq!(CountMetric::new("jobs", 4.0, Duration::from_millis(1500)).interval_ms(), Some(1500));
    /// ```
    pub fn interval_ms(&self) -> Option<u64> {
        self.head.interval_ms
    }

    head_accessors!();
}

/// A gauge: a value at a point in time.
///
/// ```
/// use newrelic_telemetry::GaugeMetric;
///
/// let temperature = GaugeMetric::new("temperature", 78.6).with_attribute("units", "F");
/// assert_eq!(temperature.value(), 78.6);
/// assert!(temperature.timestamp_ms().is_some());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeMetric {
    head: Head,
    value: f64,
}

impl GaugeMetric {
    /// A gauge of `value`, set now.
    ///
    /// ```
    /// use newrelic_telemetry::GaugeMetric;
    ///
    /// let gauge = GaugeMetric::new("memory.used", 512.0).with_attribute("unit", "MiB");
    /// assert_eq!(gauge.value(), 512.0);
    /// assert!(gauge.timestamp_ms().is_some()); // now
    /// ```
    pub fn new(name: impl Into<Arc<str>>, value: f64) -> Self {
        let mut head = Head::new(name.into());
        head.timestamp_ms = Some(now_ms());
        GaugeMetric { head, value }
    }

    pub(crate) fn at(
        name: Arc<str>,
        attributes: Arc<Attributes>,
        value: f64,
        timestamp_ms: u64,
    ) -> Self {
        GaugeMetric {
            head: Head {
                timestamp_ms: Some(timestamp_ms),
                ..Head::checked(name, attributes)
            },
            value,
        }
    }

    /// Sets the time the value was observed.
    ///
    /// ```
    /// use newrelic_telemetry::GaugeMetric;
    /// use std::time::{Duration, SystemTime};
    ///
    /// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let gauge = GaugeMetric::new("temperature", 21.5).with_timestamp(at);
    /// assert_eq!(gauge.timestamp_ms(), Some(1_700_000_000_000));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.head.timestamp_ms = Some(millis_since_epoch(timestamp));
        self.head.checked = Checked(false);
        self
    }

    /// The gauge's value.
    ///
    /// ```
    /// use newrelic_telemetry::GaugeMetric;
    ///
    /// assert_eq!(GaugeMetric::new("cpu", 0.75).value(), 0.75);
    /// ```
    pub fn value(&self) -> f64 {
        self.value
    }

    head_accessors!();
}

/// A summary: count, sum, min and max of observations over an interval.
///
/// ```
/// use newrelic_telemetry::{Summary, SummaryMetric};
/// use std::time::Duration;
///
/// let latency = SummaryMetric::new("latency", Summary::new(2, 3.0, 1.0, 2.0), Duration::from_secs(5));
/// assert_eq!(latency.summary().count, 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryMetric {
    head: Head,
    summary: Summary,
}

impl SummaryMetric {
    /// A summary over `interval`, ending now.
    ///
    /// ```
    /// use newrelic_telemetry::{Summary, SummaryMetric};
    /// use std::time::Duration;
    ///
    /// let latency = SummaryMetric::new("latency.ms", Summary::new(2, 30.0, 10.0, 20.0), Duration::from_secs(5));
    /// assert_eq!(latency.summary().max, 20.0);
    /// assert_eq!(latency.interval_ms(), Some(5_000));
    /// ```
    pub fn new(name: impl Into<Arc<str>>, summary: Summary, interval: Duration) -> Self {
        SummaryMetric {
            head: Head::new(name.into()).interval_ending_now(interval),
            summary,
        }
    }

    pub(crate) fn in_common_interval(
        name: Arc<str>,
        attributes: Arc<Attributes>,
        summary: Summary,
    ) -> Self {
        SummaryMetric {
            head: Head::checked(name, attributes),
            summary,
        }
    }

    /// Moves the interval so that it ends at `end`.
    ///
    /// ```
    /// use newrelic_telemetry::{Summary, SummaryMetric};
    /// use std::time::{Duration, SystemTime};
    ///
    /// let end = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    /// let m = SummaryMetric::new("size", Summary::from_value(3.0), Duration::from_secs(10))
    ///     .with_end_time(end);
    /// assert_eq!(m.timestamp_ms(), Some(90_000));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_end_time(mut self, end: SystemTime) -> Self {
        self.head.end_at(end);
        self
    }

    /// The summarised observations.
    ///
    /// ```
    /// use newrelic_telemetry::{Summary, SummaryMetric};
    /// use std::time::Duration;
    ///
    /// let m = SummaryMetric::new("size", Summary::from_value(3.0), Duration::from_secs(1));
    /// assert_eq!(m.summary().count, 1);
    /// ```
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// The interval in milliseconds, if the metric has its own.
    ///
    /// ```
    /// use newrelic_telemetry::{Summary, SummaryMetric};
    /// use std::time::Duration;
    ///
    /// let m = SummaryMetric::new("size", Summary::from_value(3.0), Duration::from_secs(2));
    /// assert_eq!(m.interval_ms(), Some(2_000));
    /// ```
    pub fn interval_ms(&self) -> Option<u64> {
        self.head.interval_ms
    }

    head_accessors!();
}

/// Any metric: a count, a gauge or a summary.
///
/// ```
/// use newrelic_telemetry::{GaugeMetric, Metric, MetricKind};
///
/// let m: Metric = GaugeMetric::new("queue.depth", 12.0).into();
/// assert_eq!(m.kind(), MetricKind::Gauge);
/// assert_eq!(m.name(), "queue.depth");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Metric {
    /// A count.
    Count(CountMetric),
    /// A gauge.
    Gauge(GaugeMetric),
    /// A summary.
    Summary(SummaryMetric),
}

impl Metric {
    fn head(&self) -> &Head {
        match self {
            Metric::Count(m) => &m.head,
            Metric::Gauge(m) => &m.head,
            Metric::Summary(m) => &m.head,
        }
    }

    /// Which type of metric this is.
    ///
    /// ```
    /// use newrelic_telemetry::{GaugeMetric, Metric, MetricKind};
    ///
    /// let m = Metric::from(GaugeMetric::new("cpu", 0.5));
    /// assert_eq!(m.kind(), MetricKind::Gauge);
    /// ```
    pub fn kind(&self) -> MetricKind {
        match self {
            Metric::Count(_) => MetricKind::Count,
            Metric::Gauge(_) => MetricKind::Gauge,
            Metric::Summary(_) => MetricKind::Summary,
        }
    }

    /// The metric's name.
    ///
    /// ```
    /// use newrelic_telemetry::{GaugeMetric, Metric};
    ///
    /// assert_eq!(Metric::from(GaugeMetric::new("cpu", 0.5)).name(), "cpu");
    /// ```
    pub fn name(&self) -> &str {
        &self.head().name
    }

    /// The metric's attributes.
    ///
    /// ```
    /// use newrelic_telemetry::{GaugeMetric, Metric};
    ///
    /// let m = Metric::from(GaugeMetric::new("cpu", 0.5).with_attribute("core", 0));
    /// assert_eq!(m.attributes().len(), 1);
    /// ```
    pub fn attributes(&self) -> &Attributes {
        &self.head().attributes
    }

    pub(crate) fn replace_attributes(&mut self, attributes: Attributes) {
        let head = match self {
            Metric::Count(m) => &mut m.head,
            Metric::Gauge(m) => &mut m.head,
            Metric::Summary(m) => &mut m.head,
        };
        head.attributes = Arc::new(attributes);
        head.checked = Checked(false);
    }

    /// Whether a batch built this metric from a series it validated when it
    /// was recorded, unchanged since.
    pub(crate) fn checked_by_batch(&self) -> bool {
        self.head().checked.0
    }

    pub(crate) fn shared_parts(&self) -> (&Arc<str>, &Arc<Attributes>) {
        let head = self.head();
        (&head.name, &head.attributes)
    }

    /// The metric's own timestamp, if it has one.
    ///
    /// ```
    /// use newrelic_telemetry::{GaugeMetric, Metric};
    /// use std::time::{Duration, SystemTime};
    ///
    /// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
    /// let gauge = Metric::from(GaugeMetric::new("cpu", 0.5).with_timestamp(at));
    /// assert_eq!(gauge.timestamp_ms(), Some(10_000));
    /// ```
    pub fn timestamp_ms(&self) -> Option<u64> {
        self.head().timestamp_ms
    }

    /// The metric's own interval, if it has one.
    ///
    /// ```
    /// use newrelic_telemetry::{CountMetric, GaugeMetric, Metric};
    /// use std::time::Duration;
    ///
    /// let count = Metric::from(CountMetric::new("jobs", 1.0, Duration::from_secs(5)));
    /// assert_eq!(count.interval_ms(), Some(5_000));
    /// assert_eq!(Metric::from(GaugeMetric::new("cpu", 0.5)).interval_ms(), None);
    /// ```
    pub fn interval_ms(&self) -> Option<u64> {
        self.head().interval_ms
    }
}

impl From<CountMetric> for Metric {
    fn from(m: CountMetric) -> Self {
        Metric::Count(m)
    }
}
impl From<GaugeMetric> for Metric {
    fn from(m: GaugeMetric) -> Self {
        Metric::Gauge(m)
    }
}
impl From<SummaryMetric> for Metric {
    fn from(m: SummaryMetric) -> Self {
        Metric::Summary(m)
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Metric::Count(m) => m.serialize(serializer),
            Metric::Gauge(m) => m.serialize(serializer),
            Metric::Summary(m) => m.serialize(serializer),
        }
    }
}

impl Serialize for CountMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.head
            .serialize(MetricKind::Count, &self.value, serializer)
    }
}
impl Serialize for GaugeMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.head
            .serialize(MetricKind::Gauge, &self.value, serializer)
    }
}
impl Serialize for SummaryMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.head
            .serialize(MetricKind::Summary, &self.summary, serializer)
    }
}

impl crate::budget::HeapSize for Metric {
    fn held_bytes(&self) -> usize {
        let head = self.head();
        std::mem::size_of::<Self>()
            + crate::budget::arc_str_bytes(head.name.len())
            + 2 * std::mem::size_of::<usize>()
            + head.attributes.held_bytes()
    }
}
