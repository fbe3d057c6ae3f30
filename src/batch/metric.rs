//! The aggregating metric batch.
//!
//! Series live in shards, each behind its own `tokio::sync::Mutex`, picked by
//! the series' hash, so tasks recording different series rarely meet on a lock.
//! A series is found by a hash of (type, name, attribute set) computed from the
//! caller's borrowed pairs, so recording into an existing series allocates
//! nothing. Names, attribute strings and whole attribute sets are interned per
//! shard, so series that share them share the memory.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashTable;
use tokio::sync::{Mutex, Notify};

use super::{Batch, RecordCounters, RecordStats};
use crate::attributes::{AsAttributes, Attributes, Value, same_set, set_hash};
use crate::common::Common;
use crate::error::RecordError;
use crate::metric::{CountMetric, GaugeMetric, Metric, MetricKind, Summary, SummaryMetric};
use crate::time::{Clock, duration_millis};
use crate::validate::{METRIC_LIMITS, metric_attributes, sanitize_common};

/// Series a batch holds at most by default; see [`MetricBatchBuilder::max_series`].
pub const DEFAULT_MAX_SERIES: usize = 100_000;

type HashBuilder = foldhash::fast::RandomState;

/// A batch of metrics that aggregates as it records.
///
/// A series is identified by its type, name and attribute set (in any order).
/// Counts add up, gauges keep the last value and when it was set, and summaries
/// merge each observation into count, sum, min and max. The batch tracks the
/// interval it aggregated over; [`flush`](Self::flush) returns the series with a
/// common block holding that interval's start (`timestamp`) and length
/// (`interval.ms`), and starts the next interval.
///
/// ```
/// use newrelic_telemetry::MetricBatch;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
/// let batch = Arc::new(MetricBatch::new());
/// batch.record_count("requests", 1.0, [("route", "/a")]).await?;
/// batch.record_count("requests", 2.0, [("route", "/a")]).await?;
/// batch.record_gauge("queue.depth", 7.0, ()).await?;
/// batch.record_summary("latency.ms", 12.5, [("route", "/a")]).await?;
///
/// let (metrics, common) = batch.flush().await;
/// assert_eq!(metrics.len(), 3);
/// assert!(common.interval_ms().is_some());
/// # Ok(()) }
/// ```
pub struct MetricBatch {
    shards: Box<[Mutex<Shard>]>,
    /// Interval anchor; a std mutex held only to swap it at flush.
    interval: std::sync::Mutex<Clock>,
    hasher: HashBuilder,
    common_attributes: Option<Arc<Attributes>>,
    max_series: usize,
    series: AtomicUsize,
    counters: RecordCounters,
    harvest: Notify,
}

impl std::fmt::Debug for MetricBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricBatch")
            .field("shards", &self.shards.len())
            .field("series", &self.series.load(Ordering::Relaxed))
            .field("max_series", &self.max_series)
            .field("common_attributes", &self.common_attributes)
            .finish_non_exhaustive()
    }
}

/// How a recording changes a series.
#[derive(Clone, Copy)]
enum Update {
    Add(f64),
    Set {
        value: f64,
        timestamp_ms: Option<u64>,
    },
    Observe(f64),
    Merge(Summary),
}

impl Update {
    fn kind(self) -> MetricKind {
        match self {
            Update::Add(_) => MetricKind::Count,
            Update::Set { .. } => MetricKind::Gauge,
            Update::Observe(_) | Update::Merge(_) => MetricKind::Summary,
        }
    }

    fn is_valid(self) -> bool {
        match self {
            Update::Add(v) | Update::Set { value: v, .. } | Update::Observe(v) => v.is_finite(),
            Update::Merge(s) => s.is_valid(),
        }
    }

    fn into_value(self, clock: &Clock) -> SeriesValue {
        match self {
            Update::Add(v) => SeriesValue::Count(v),
            Update::Set {
                value,
                timestamp_ms,
            } => SeriesValue::Gauge {
                value,
                timestamp_ms: timestamp_ms.unwrap_or_else(|| clock.now_ms()),
            },
            Update::Observe(v) => SeriesValue::Summary(Summary::from_value(v)),
            Update::Merge(s) => SeriesValue::Summary(s),
        }
    }
}

/// A series' aggregated value; its variant is the series' type.
#[derive(Clone, Copy, Debug)]
enum SeriesValue {
    Count(f64),
    Gauge { value: f64, timestamp_ms: u64 },
    Summary(Summary),
}

impl SeriesValue {
    fn apply(&mut self, update: Update, clock: &Clock) {
        match (self, update) {
            (SeriesValue::Count(v), Update::Add(x)) => *v += x,
            (SeriesValue::Summary(s), Update::Observe(x)) => s.observe(x),
            (SeriesValue::Summary(s), Update::Merge(m)) => s.merge(&m),
            (slot, update) => *slot = update.into_value(clock),
        }
    }
}

struct Series {
    hash: u64,
    name: Arc<str>,
    attributes: Arc<Attributes>,
    value: SeriesValue,
}

impl Series {
    fn kind(&self) -> MetricKind {
        match self.value {
            SeriesValue::Count(_) => MetricKind::Count,
            SeriesValue::Gauge { .. } => MetricKind::Gauge,
            SeriesValue::Summary(_) => MetricKind::Summary,
        }
    }

    fn into_metric(self) -> Metric {
        match self.value {
            SeriesValue::Count(v) => {
                CountMetric::in_common_interval(self.name, self.attributes, v).into()
            }
            SeriesValue::Gauge {
                value,
                timestamp_ms,
            } => GaugeMetric::at(self.name, self.attributes, value, timestamp_ms).into(),
            SeriesValue::Summary(s) => {
                SummaryMetric::in_common_interval(self.name, self.attributes, s).into()
            }
        }
    }
}

/// One shard: series in insertion order, an index over them, and interners.
struct Shard {
    index: HashTable<u32>,
    series: Vec<Series>,
    strings: HashTable<Arc<str>>,
    sets: HashTable<(u64, Arc<Attributes>)>,
    clock: Clock,
}

impl Shard {
    fn new(clock: Clock) -> Self {
        Shard {
            index: HashTable::new(),
            series: Vec::new(),
            strings: HashTable::new(),
            sets: HashTable::new(),
            clock,
        }
    }

    /// The position of the series, found from borrowed parts.
    fn find(
        &self,
        hash: u64,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Option<usize> {
        let series = &self.series;
        self.index
            .find(hash, |&i| {
                let s = &series[i as usize];
                s.hash == hash
                    && s.kind() == kind
                    && *s.name == *name
                    && same_set(&s.attributes, attrs)
            })
            .map(|&i| i as usize)
    }

    fn intern_str(&mut self, hasher: &HashBuilder, s: &str) -> Arc<str> {
        let hash = hasher.hash_one(s);
        match self
            .strings
            .entry(hash, |t| **t == *s, |t| hasher.hash_one(&**t))
        {
            hashbrown::hash_table::Entry::Occupied(e) => e.get().clone(),
            hashbrown::hash_table::Entry::Vacant(e) => e.insert(Arc::from(s)).get().clone(),
        }
    }

    fn intern_set(
        &mut self,
        hasher: &HashBuilder,
        set_hash: u64,
        mut attrs: Attributes,
    ) -> Arc<Attributes> {
        if let Some((_, set)) = self
            .sets
            .find(set_hash, |(h, s)| *h == set_hash && **s == attrs)
        {
            return set.clone();
        }
        for (key, value) in attrs.pairs_mut().iter_mut() {
            *key = self.intern_str(hasher, key);
            if let Value::String(s) = value {
                *s = self.intern_str(hasher, s);
            }
        }
        let set = Arc::new(attrs);
        self.sets
            .insert_unique(set_hash, (set_hash, set.clone()), |(h, _)| *h);
        set
    }
}

/// Configures a [`MetricBatch`].
///
/// ```
/// use newrelic_telemetry::{attributes, MetricBatch};
///
/// let batch = MetricBatch::builder()
///     .common_attributes(attributes! { "host" => "web-1" })
///     .max_series(10_000)
///     .build();
/// ```
#[derive(Debug, Clone)]
pub struct MetricBatchBuilder {
    common_attributes: Option<Attributes>,
    max_series: usize,
    shards: usize,
}

impl MetricBatchBuilder {
    /// Attributes sent once per payload in the common block. Invalid pairs are
    /// removed with a warning.
    pub fn common_attributes(mut self, attributes: Attributes) -> Self {
        self.common_attributes = Some(attributes);
        self
    }

    /// The most series the batch holds between flushes (default 100,000). When
    /// it is reached, the batch asks its harvester for an early harvest, and
    /// recording a new series fails with
    /// [`RecordError::SeriesLimitReached`] until then; existing series keep
    /// aggregating.
    pub fn max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series.max(1);
        self
    }

    /// How many independently locked shards the batch uses (rounded up to a
    /// power of two, at least 1). The default is four per available core, at
    /// least 4 and at most 64.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 1024).next_power_of_two();
        self
    }

    /// Builds the batch; its first interval starts now.
    pub fn build(self) -> MetricBatch {
        let clock = Clock::start();
        MetricBatch {
            shards: (0..self.shards)
                .map(|_| Mutex::new(Shard::new(clock)))
                .collect(),
            interval: std::sync::Mutex::new(clock),
            hasher: HashBuilder::default(),
            common_attributes: self
                .common_attributes
                .map(|a| sanitize_common(a, &METRIC_LIMITS))
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            max_series: self.max_series,
            series: AtomicUsize::new(0),
            counters: RecordCounters::default(),
            harvest: Notify::new(),
        }
    }
}

impl Default for MetricBatchBuilder {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        MetricBatchBuilder {
            common_attributes: None,
            max_series: DEFAULT_MAX_SERIES,
            shards: (cores * 4).clamp(4, 64).next_power_of_two(),
        }
    }
}

impl Default for MetricBatch {
    fn default() -> Self {
        MetricBatch::new()
    }
}

impl MetricBatch {
    /// A batch with default settings and no common attributes.
    pub fn new() -> Self {
        MetricBatchBuilder::default().build()
    }

    /// A builder for a batch with common attributes or other limits.
    pub fn builder() -> MetricBatchBuilder {
        MetricBatchBuilder::default()
    }

    /// Adds `value` to the count `name` with `attributes`.
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("cache.hits", 1.0, [("cache", "users")]).await.unwrap();
    /// # }
    /// ```
    pub async fn record_count(
        &self,
        name: &str,
        value: f64,
        attributes: impl AsAttributes,
    ) -> Result<(), RecordError> {
        self.record(name, &attributes, Update::Add(value)).await
    }

    /// Sets the gauge `name` with `attributes` to `value`, timestamped now.
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_gauge("memory.used", 512.0, [("unit", "MiB")]).await.unwrap();
    /// # }
    /// ```
    pub async fn record_gauge(
        &self,
        name: &str,
        value: f64,
        attributes: impl AsAttributes,
    ) -> Result<(), RecordError> {
        self.record(
            name,
            &attributes,
            Update::Set {
                value,
                timestamp_ms: None,
            },
        )
        .await
    }

    /// Adds one observation of `value` to the summary `name` with `attributes`.
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_summary("db.query.ms", 3.2, [("table", "orders")]).await.unwrap();
    /// # }
    /// ```
    pub async fn record_summary(
        &self,
        name: &str,
        value: f64,
        attributes: impl AsAttributes,
    ) -> Result<(), RecordError> {
        self.record(name, &attributes, Update::Observe(value)).await
    }

    /// Aggregates a pre-built metric: a count adds its value, a gauge sets its
    /// value and timestamp, a summary merges its count, sum, min and max. The
    /// metric's own interval is replaced by the batch's.
    ///
    /// ```
    /// # use newrelic_telemetry::{CountMetric, MetricBatch};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_metric(CountMetric::new("jobs", 4.0, Duration::from_secs(1))).await.unwrap();
    /// # }
    /// ```
    pub async fn record_metric(&self, metric: impl Into<Metric>) -> Result<(), RecordError> {
        let metric = metric.into();
        let update = match &metric {
            Metric::Count(m) => Update::Add(m.value()),
            Metric::Gauge(m) => Update::Set {
                value: m.value(),
                timestamp_ms: m.timestamp_ms(),
            },
            Metric::Summary(m) => Update::Merge(m.summary()),
        };
        let (name, attributes) = metric.shared_parts();
        self.record(name, &**attributes, update).await
    }

    fn series_hash(&self, kind: MetricKind, name: &str, set_hash: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(kind as u8);
        h.write(name.as_bytes());
        h.write_u64(set_hash);
        h.finish()
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // Bits 32.. are used neither for hashbrown's bucket index at these sizes
        // nor for its control byte (the top 7 bits).
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    async fn record(
        &self,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
        update: Update,
    ) -> Result<(), RecordError> {
        if !update.is_valid() {
            return Err(self
                .counters
                .refused(if matches!(update, Update::Merge(_)) {
                    RecordError::InvalidSummary
                } else {
                    RecordError::NonFiniteValue {
                        name: name.to_owned(),
                    }
                }));
        }
        let kind = update.kind();
        let hash = self.series_hash(kind, name, set_hash(&self.hasher, attrs));
        {
            let mut shard = self.shard(hash).lock().await;
            if let Some(i) = shard.find(hash, kind, name, attrs) {
                let Shard { series, clock, .. } = &mut *shard;
                series[i].value.apply(update, clock);
                return Ok(());
            }
        }
        self.insert(kind, name, attrs, update).await
    }

    /// The slow path: validates and canonicalises a series seen for the first
    /// time (outside any lock), then inserts it, or updates it if another task
    /// (or a differently spelled attribute list) got there first.
    async fn insert(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
        update: Update,
    ) -> Result<(), RecordError> {
        if name.is_empty() {
            return Err(self.counters.refused(RecordError::EmptyName));
        }
        let (canonical, truncations) =
            metric_attributes(name, attrs).map_err(|e| self.counters.refused(e))?;
        self.counters.truncated(truncations);
        let set_hash = set_hash(&self.hasher, &canonical);
        let hash = self.series_hash(kind, name, set_hash);

        let mut guard = self.shard(hash).lock().await;
        let shard = &mut *guard;
        if let Some(i) = shard.find(hash, kind, name, &canonical) {
            shard.series[i].value.apply(update, &shard.clock);
            return Ok(());
        }
        if self.series.fetch_add(1, Ordering::Relaxed) >= self.max_series {
            self.series.fetch_sub(1, Ordering::Relaxed);
            self.harvest.notify_one();
            return Err(self.counters.refused(RecordError::SeriesLimitReached {
                limit: self.max_series,
            }));
        }
        let Ok(position) = u32::try_from(shard.series.len()) else {
            self.series.fetch_sub(1, Ordering::Relaxed);
            return Err(self.counters.refused(RecordError::SeriesLimitReached {
                limit: self.max_series,
            }));
        };
        let name = shard.intern_str(&self.hasher, name);
        let attributes = shard.intern_set(&self.hasher, set_hash, canonical);
        let value = update.into_value(&shard.clock);
        shard.series.push(Series {
            hash,
            name,
            attributes,
            value,
        });
        let series = &shard.series;
        shard
            .index
            .insert_unique(hash, position, |&i| series[i as usize].hash);
        Ok(())
    }

    /// Takes every series out and starts a new interval.
    ///
    /// Returns the metrics and a common block with the batch's common
    /// attributes, `timestamp` = the start of the interval that ended, and
    /// `interval.ms` = its length. Each shard is swapped for an empty one under
    /// its lock in O(1); the metrics are built after the locks are released, so
    /// a large flush never blocks recording.
    pub async fn flush(&self) -> (Vec<Metric>, Common) {
        let (previous, next) = {
            let mut clock = self.interval.lock().unwrap_or_else(|p| p.into_inner());
            (clock.roll(), *clock)
        };
        let mut taken = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            let old = std::mem::replace(&mut *shard.lock().await, Shard::new(next));
            self.series.fetch_sub(old.series.len(), Ordering::Relaxed);
            taken.push(old);
        }
        let interval_ms =
            duration_millis(next.instant().saturating_duration_since(previous.instant()));
        let common = Common::new()
            .with_timestamp_ms(previous.start_ms())
            .with_interval_ms(interval_ms)
            .with_shared_attributes(self.common_attributes.clone());
        let mut metrics = Vec::with_capacity(taken.iter().map(|s| s.series.len()).sum());
        for shard in taken {
            metrics.extend(shard.series.into_iter().map(Series::into_metric));
        }
        (metrics, common)
    }

    /// How many series the batch holds now.
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// What the batch refused or changed since it was created.
    pub fn record_stats(&self) -> RecordStats {
        self.counters.snapshot()
    }

    /// The common attributes sent with every flush.
    pub fn common_attributes(&self) -> Option<&Attributes> {
        self.common_attributes.as_deref()
    }
}

impl super::sealed::Sealed for MetricBatch {}

impl Batch for MetricBatch {
    type Item = Metric;

    fn flush(&self) -> impl std::future::Future<Output = (Vec<Metric>, Common)> + Send {
        MetricBatch::flush(self)
    }

    fn harvest_requested(&self) -> impl std::future::Future<Output = ()> + Send {
        self.harvest.notified()
    }

    fn record_stats(&self) -> RecordStats {
        self.counters.snapshot()
    }
}
