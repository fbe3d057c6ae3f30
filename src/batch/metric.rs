//! The aggregating metric batch.
//!
//! Series live in shards picked by the series' hash, so tasks recording
//! different series rarely meet on a lock. Each shard sits behind its own
//! `std::sync::Mutex` on its own cache line: every critical section is short
//! and never spans an `.await` (a lookup and an update on the hot path, an
//! insertion of an already validated series, an O(1) swap at flush), so a
//! blocking lock is both safe in async code and three times cheaper than an
//! async one; the recording calls stay `async` and consume Tokio's cooperative
//! budget, so a task that records in a tight loop still yields to others.
//!
//! A series is found by a hash of (type, name, attribute set) computed from the
//! caller's borrowed pairs, and confirmed by comparing those pairs with the
//! stored ones, so recording into an existing series allocates nothing. Names,
//! attribute strings and whole attribute sets are interned per shard, so series
//! that share them share the memory.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hashbrown::HashTable;
use tokio::sync::Notify;

use super::{Batch, RecordCounters, RecordStats, Taken};
use crate::attributes::{AsAttributes, Attributes, Value, ValueRef};
use crate::budget::{
    DEFAULT_MEMORY_BUDGET, HeapSize, HeldBytes, MemoryBudget, MemoryStats, arc_str_bytes,
};
use crate::common::Common;
use crate::error::RecordError;
use crate::metric::{
    CountMetric, GaugeMetric, Metric, MetricKind, MetricValue, Summary, SummaryMetric,
};
use crate::time::{Clock, interval_millis};
use crate::validate::{
    METRIC_LIMITS, check_metric, check_metric_name, metric_attributes, sanitize_common,
};

/// Series a metric batch holds at most by default: 100,000. See
/// [`MetricBatchBuilder::max_series`].
pub const DEFAULT_MAX_SERIES: usize = 100_000;

type HashBuilder = foldhash::fast::RandomState;

/// A flush yields to the runtime after building each shard's metrics when the
/// shard held at least this many series.
const FLUSH_YIELD_SERIES: usize = 4096;

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
    shards: Box<[ShardLock]>,
    /// Interval anchor; a std mutex held only to swap it at flush.
    interval: std::sync::Mutex<Clock>,
    hasher: HashBuilder,
    seeds: Seeds,
    common_attributes: Option<Arc<Attributes>>,
    max_series: usize,
    series: AtomicUsize,
    /// Set by [`MetricBatch::close`]; read under a shard lock, so that a
    /// recording either lands before the final flush or is refused.
    closed: AtomicBool,
    counters: RecordCounters,
    harvest: Notify,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for MetricBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricBatch")
            .field("shards", &self.shards.len())
            .field("series", &self.series.load(Ordering::Relaxed))
            .field("max_series", &self.max_series)
            .field("common_attributes", &self.common_attributes)
            .field("memory", &self.budget.snapshot())
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
    /// Applies `update`, unless the aggregate would stop being finite (a sum
    /// overflowing to infinity), in which case the series keeps its value and
    /// `false` is returned: NaN and infinities never reach the wire.
    fn apply(&mut self, update: Update, clock: &Clock) -> bool {
        match (self, update) {
            (SeriesValue::Count(v), Update::Add(x)) => finite_then(*v + x, |sum| *v = sum),
            (SeriesValue::Summary(s), Update::Observe(x)) => {
                finite_then(s.sum + x, |_| s.observe(x))
            }
            (SeriesValue::Summary(s), Update::Merge(m)) => {
                finite_then(s.sum + m.sum, |_| s.merge(&m))
            }
            (slot, update) => {
                *slot = update.into_value(clock);
                true
            }
        }
    }
}

/// Runs `commit` with `x` if it is finite; says whether it did.
#[inline(always)]
fn finite_then(x: f64, commit: impl FnOnce(f64)) -> bool {
    let finite = x.is_finite();
    if finite {
        commit(x);
    }
    finite
}

/// What identifies a series, kept apart from its value: recording only reads
/// these, so they stay shared in every core's cache while the values change.
struct Series {
    hash: u64,
    name: Arc<str>,
    attributes: Arc<Attributes>,
    kind: MetricKind,
}

impl Series {
    fn into_metric(self, value: SeriesValue) -> Metric {
        match value {
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

/// The series hash: random per batch, computed from the caller's borrowed
/// pairs on every recording, so it is built for short strings. A string of up
/// to 16 bytes is read as at most two overlapping words which, with its length,
/// determine it, then mixed with a folded multiply (as foldhash does); longer
/// strings are folded 16 bytes at a time. A set's hash is the wrapping sum of
/// its pairs' hashes, so the order of the pairs does not matter. Equality is
/// always checked after a hash matches.
#[derive(Clone, Copy)]
struct Seeds([u64; 6]);

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]))
}

impl Seeds {
    fn new(random: &HashBuilder) -> Self {
        // Odd multipliers keep the folded multiply from losing bits.
        Seeds(std::array::from_fn(|i| random.hash_one(i as u64) | 1))
    }

    #[inline(always)]
    fn str(self, seed: u64, s: &str) -> u64 {
        let b = s.as_bytes();
        let n = b.len();
        let (lo, hi) = match n {
            0 => (0, 0),
            1..=3 => (
                u64::from(b[0]) << 16 | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]),
                0,
            ),
            4..=7 => (u64::from(word4(b, 0)), u64::from(word4(b, n - 4))),
            8..=16 => (word8(b, 0), word8(b, n - 8)),
            _ => return self.long_str(seed, b),
        };
        fold(lo ^ seed, hi ^ self.0[5] ^ (n as u64).rotate_left(32))
    }

    #[inline(never)]
    fn long_str(self, seed: u64, b: &[u8]) -> u64 {
        let n = b.len();
        let mut acc = seed ^ (n as u64).wrapping_mul(MUL);
        let mut chunks = b.chunks_exact(16);
        for c in &mut chunks {
            acc = fold(acc ^ word8(c, 0), word8(c, 8) ^ self.0[5]);
        }
        // The last 16 bytes (overlapping what the loop read) cover the rest.
        if !chunks.remainder().is_empty() {
            acc = fold(acc ^ word8(b, n - 16), word8(b, n - 8) ^ self.0[4]);
        }
        acc
    }

    #[inline(always)]
    fn value(self, v: ValueRef<'_>) -> u64 {
        let s = self.0[1];
        match v {
            ValueRef::Str(x) => self.str(s, x),
            ValueRef::Int(i) => fold(i as u64 ^ s, MUL ^ 1),
            ValueRef::Float(f) => fold(f.to_bits() ^ s, MUL ^ 2),
            ValueRef::Bool(b) => fold(u64::from(b) ^ s, MUL ^ 3),
        }
    }

    #[inline(always)]
    fn pair(self, k: &str, v: ValueRef<'_>) -> u64 {
        fold(self.str(self.0[0], k) ^ self.0[2], self.value(v) ^ MUL)
    }

    #[inline(always)]
    fn series(self, kind: MetricKind, name: &str, set_hash: u64) -> u64 {
        let seed = self.0[3] ^ (kind as u64 + 1).wrapping_mul(MUL);
        fold(self.str(seed, name) ^ set_hash, self.0[4])
    }
}

/// The cooperative yield point a Tokio lock would be: consumes a unit of the
/// task's budget and yields if it is spent, so that a task recording in a tight
/// loop lets the other tasks on its worker (and the timers it drives) run.
/// Taken before recording, so a recording whose future is dropped while it
/// yields has no effect.
#[inline(always)]
async fn cooperate() {
    tokio::task::coop::consume_budget().await;
}

/// A shard's lock, alone on its cache lines so that tasks working on
/// neighbouring shards do not invalidate each other's.
#[repr(align(128))]
struct ShardLock(std::sync::Mutex<Shard>);

impl ShardLock {
    fn new(shard: Shard) -> Self {
        ShardLock(std::sync::Mutex::new(shard))
    }

    /// Locks the shard. No critical section can leave a shard half-updated
    /// (nothing in one panics short of an allocation failure), so a poisoned
    /// lock is simply taken over.
    #[inline]
    fn lock(&self) -> std::sync::MutexGuard<'_, Shard> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Byte-string equality for the short strings of names and attributes,
/// without a call into `memcmp`: lengths first, then at most two overlapping
/// word-sized loads per side.
#[inline(always)]
fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

/// Identity of a stored value and a borrowed one (floats by bit pattern).
#[inline(always)]
fn value_eq(stored: &Value, v: ValueRef<'_>) -> bool {
    match (stored, v) {
        (Value::String(a), ValueRef::Str(b)) => str_eq(a, b),
        (stored, v) => stored.as_value_ref().same_as(v),
    }
}

/// Whether borrowed pairs name exactly the stored (sorted, unique-key) set, in
/// any order, each stored pair matched once. Small sets are scanned linearly,
/// comparing key lengths first; larger ones are binary-searched. A metric's
/// set has at most 100 pairs (validated on insertion), so one `u128` marks
/// the pairs already matched.
#[inline]
fn same_attributes(stored: &Attributes, source: &(impl AsAttributes + ?Sized)) -> bool {
    let pairs = stored.pairs();
    if pairs.len() != source.attribute_count() || pairs.len() > 128 {
        return false;
    }
    let position = |k: &str| {
        if pairs.len() <= 16 {
            pairs.iter().position(|(key, _)| str_eq(key, k))
        } else {
            stored.position(k)
        }
    };
    let mut seen = 0u128;
    let mut same = true;
    source.for_each_attribute(|k, v| {
        if !same {
            return;
        }
        same = match position(k) {
            Some(i) if seen & (1 << i) == 0 && value_eq(&pairs[i].1, v) => {
                seen |= 1 << i;
                true
            }
            _ => false,
        };
    });
    same
}

/// One shard: series in insertion order with their values beside them, an
/// index over them, and interners.
struct Shard {
    index: HashTable<u32>,
    series: Vec<Series>,
    values: Vec<SeriesValue>,
    strings: HashTable<Arc<str>>,
    sets: HashTable<(u64, Arc<Attributes>)>,
    clock: Clock,
    /// What the shard's series, strings and sets hold, as counted against the
    /// budget.
    held_bytes: usize,
}

/// What one series holds besides its strings and attribute set: its identity,
/// its value and its slot in the index (a `u32` and a control byte).
const SERIES_BYTES: usize = std::mem::size_of::<Series>() + std::mem::size_of::<SeriesValue>() + 5;
/// What an interned string's slot in its table holds.
const STRING_SLOT_BYTES: usize = std::mem::size_of::<Arc<str>>() + 1;
/// What an interned attribute set holds besides its pairs' strings: the
/// shared allocation around it and its slot in the table.
const SET_BYTES: usize = 2 * std::mem::size_of::<usize>()
    + std::mem::size_of::<Attributes>()
    + std::mem::size_of::<(u64, Arc<Attributes>)>()
    + 1;

/// The most a new series can add to a shard: as if its name, its set and
/// every string in it were new.
fn new_series_bytes(name: &str, attrs: &Attributes) -> usize {
    SERIES_BYTES
        + arc_str_bytes(name.len())
        + STRING_SLOT_BYTES
        + SET_BYTES
        + attrs.held_bytes()
        + attrs.len() * 2 * STRING_SLOT_BYTES
}

impl Shard {
    fn new(clock: Clock) -> Self {
        Shard {
            index: HashTable::new(),
            series: Vec::new(),
            values: Vec::new(),
            strings: HashTable::new(),
            sets: HashTable::new(),
            clock,
            held_bytes: 0,
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
                    && s.kind == kind
                    && str_eq(&s.name, name)
                    && same_attributes(&s.attributes, attrs)
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
            hashbrown::hash_table::Entry::Vacant(e) => {
                self.held_bytes += arc_str_bytes(s.len()) + STRING_SLOT_BYTES;
                e.insert(Arc::from(s)).get().clone()
            }
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
        self.held_bytes += SET_BYTES + std::mem::size_of_val(attrs.pairs());
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
/// assert_eq!(batch.common_attributes(), Some(&attributes! { "host" => "web-1" }));
/// assert_eq!(batch.series_count(), 0);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MetricBatchBuilder {
    common_attributes: Option<Attributes>,
    max_series: usize,
    shards: usize,
    memory_budget: usize,
}

impl MetricBatchBuilder {
    /// Attributes sent once per payload in the common block. Invalid pairs are
    /// removed with a warning.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, attributes};
    ///
    /// let batch = MetricBatch::builder().common_attributes(attributes! { "host" => "web-1" }).build();
    /// assert_eq!(batch.common_attributes().unwrap().len(), 1);
    /// ```
    pub fn common_attributes(mut self, attributes: Attributes) -> Self {
        self.common_attributes = Some(attributes);
        self
    }

    /// The most series the batch holds between flushes (default 100,000). When
    /// it is reached, the batch asks its harvester for an early harvest, and
    /// recording a new series fails with
    /// [`RecordError::SeriesLimitReached`] until then; existing series keep
    /// aggregating.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().max_series(1).build();
    /// batch.record_count("a", 1.0, ()).await.unwrap();
    /// assert_eq!(batch.record_count("b", 1.0, ()).await, Err(RecordError::SeriesLimitReached { limit: 1 }));
    /// batch.record_count("a", 1.0, ()).await.unwrap(); // an existing series still aggregates
    /// # }
    /// ```
    pub fn max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series.max(1);
        self
    }

    /// How many independently locked shards the batch uses (rounded up to a
    /// power of two, at least 1). The default is four per available core, at
    /// least 4 and at most 64.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// let batch = MetricBatch::builder().shards(3).build();
    /// assert!(format!("{batch:?}").contains("shards: 4")); // rounded up to a power of two
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 1024).next_power_of_two();
        self
    }

    /// The most bytes the pipeline may hold in memory (default
    /// [`DEFAULT_MEMORY_BUDGET`](crate::DEFAULT_MEMORY_BUDGET), 16 MiB; at
    /// least 4 MiB): series waiting here, metrics being encoded, and
    /// compressed payloads waiting to be sent. A new series that would take
    /// the pipeline past its record limit (the budget less 2 MB kept for the
    /// work of sending) is refused with [`RecordError::MemoryBudgetFull`]
    /// (counted); series already held keep aggregating. The send queue may
    /// fill half of the record limit, and past that the harvester drops its
    /// oldest payload.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().memory_budget(4 * 1024 * 1024).build();
    /// let mut series = 0;
    /// while batch.record_count("hits", 1.0, [("user", series)]).await.is_ok() {
    ///     series += 1;
    /// }
    /// assert!(series > 5_000); // a few hundred bytes each
    /// let err = batch.record_count("hits", 1.0, [("user", series)]).await.unwrap_err();
    /// assert!(matches!(err, RecordError::MemoryBudgetFull { .. }));
    /// batch.record_count("hits", 1.0, [("user", 0)]).await.unwrap(); // an existing series still counts
    /// assert!(batch.memory().held_bytes <= batch.memory().record_limit_bytes);
    /// # }
    /// ```
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Builds the batch; its first interval starts now.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// let batch = MetricBatch::builder().build();
    /// assert_eq!(batch.series_count(), 0);
    /// ```
    pub fn build(self) -> MetricBatch {
        let clock = Clock::start();
        let hasher = HashBuilder::default();
        MetricBatch {
            shards: (0..self.shards)
                .map(|_| ShardLock::new(Shard::new(clock)))
                .collect(),
            interval: std::sync::Mutex::new(clock),
            seeds: Seeds::new(&hasher),
            hasher,
            common_attributes: self
                .common_attributes
                .map(|a| sanitize_common(a, &METRIC_LIMITS))
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            max_series: self.max_series,
            series: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            counters: RecordCounters::default(),
            harvest: Notify::new(),
            budget: MemoryBudget::new(self.memory_budget),
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
            memory_budget: DEFAULT_MEMORY_BUDGET,
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
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// let batch = MetricBatch::new();
    /// assert!(batch.common_attributes().is_none());
    /// ```
    pub fn new() -> Self {
        MetricBatchBuilder::default().build()
    }

    /// A builder for a batch with common attributes or other limits.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// let batch = MetricBatch::builder().max_series(1_000).build();
    /// assert_eq!(batch.series_count(), 0);
    /// ```
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
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> Result<(), RecordError> {
        let (name, value) = (name.as_ref(), value.to_f64());
        cooperate().await;
        self.record_now(name, &attributes, Update::Add(value))
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
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> Result<(), RecordError> {
        let (name, value) = (name.as_ref(), value.to_f64());
        cooperate().await;
        self.record_now(
            name,
            &attributes,
            Update::Set {
                value,
                timestamp_ms: None,
            },
        )
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
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> Result<(), RecordError> {
        let (name, value) = (name.as_ref(), value.to_f64());
        cooperate().await;
        self.record_now(name, &attributes, Update::Observe(value))
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
        check_metric(&metric).map_err(|e| self.counters.refused(e))?;
        let (name, attributes) = metric.shared_parts();
        cooperate().await;
        self.record_now(name, &**attributes, update)
    }

    /// The order-free hash of an attribute set.
    #[inline]
    fn set_hash(&self, attrs: &(impl AsAttributes + ?Sized)) -> u64 {
        let mut sum = 0u64;
        attrs.for_each_attribute(|k, v| sum = sum.wrapping_add(self.seeds.pair(k, v)));
        sum
    }

    #[inline]
    fn series_hash(&self, kind: MetricKind, name: &str, set_hash: u64) -> u64 {
        self.seeds.series(kind, name, set_hash)
    }

    fn shard(&self, hash: u64) -> &ShardLock {
        // Bits 32.. are used neither for hashbrown's bucket index at these sizes
        // nor for its control byte (the top 7 bits).
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    /// Records without waiting: the shard locks are never held across an
    /// `.await`, so the whole recording happens in one poll.
    #[inline]
    fn record_now(
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
        let hash = self.series_hash(kind, name, self.set_hash(attrs));
        {
            let mut shard = self.shard(hash).lock();
            if let Some(i) = shard.find(hash, kind, name, attrs) {
                if self.closed.load(Ordering::Relaxed) {
                    drop(shard);
                    return Err(self.counters.refused(RecordError::Closed));
                }
                let Shard { values, clock, .. } = &mut *shard;
                if values[i].apply(update, clock) {
                    return Ok(());
                }
                drop(shard);
                return Err(self.overflow(name));
            }
        }
        self.insert(kind, name, attrs, update)
    }

    /// The slow path: validates and canonicalises a series seen for the first
    /// time (outside any lock), then inserts it, or updates it if another task
    /// (or a differently spelled attribute list) got there first.
    #[inline(never)]
    fn insert(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
        update: Update,
    ) -> Result<(), RecordError> {
        check_metric_name(name).map_err(|e| self.counters.refused(e))?;
        let (canonical, truncations) =
            metric_attributes(name, attrs).map_err(|e| self.counters.refused(e))?;
        self.counters.truncated(truncations);
        let set_hash = self.set_hash(&canonical);
        let hash = self.series_hash(kind, name, set_hash);

        let mut guard = self.shard(hash).lock();
        if self.closed.load(Ordering::Relaxed) {
            drop(guard);
            return Err(self.counters.refused(RecordError::Closed));
        }
        let shard = &mut *guard;
        if let Some(i) = shard.find(hash, kind, name, &canonical) {
            if shard.values[i].apply(update, &shard.clock) {
                return Ok(());
            }
            drop(guard);
            return Err(self.overflow(name));
        }
        let held = self.series.fetch_add(1, Ordering::Relaxed);
        if held >= self.max_series {
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
        // Room for the series as if everything in it were new; what interning
        // shares is given back right after.
        let most = new_series_bytes(name, &canonical);
        if !self.budget.try_reserve_item(most) {
            self.series.fetch_sub(1, Ordering::Relaxed);
            drop(guard);
            self.harvest.notify_one();
            return Err(self.counters.refused(RecordError::MemoryBudgetFull {
                budget_bytes: self.budget.limit(),
            }));
        }
        if held + 1 == self.max_series.div_ceil(2) {
            // Half full: ask for an early harvest before anything is refused.
            self.harvest.notify_one();
        }
        let before = shard.held_bytes;
        let name = shard.intern_str(&self.hasher, name);
        let attributes = shard.intern_set(&self.hasher, set_hash, canonical);
        let value = update.into_value(&shard.clock);
        shard.series.push(Series {
            hash,
            name,
            attributes,
            kind,
        });
        shard.values.push(value);
        shard.held_bytes += SERIES_BYTES;
        self.budget
            .release_bytes(most.saturating_sub(shard.held_bytes - before));
        let series = &shard.series;
        shard
            .index
            .insert_unique(hash, position, |&i| series[i as usize].hash);
        Ok(())
    }

    #[cold]
    fn overflow(&self, name: &str) -> RecordError {
        self.counters.refused(RecordError::AggregateOverflow {
            name: name.to_owned(),
        })
    }

    /// Refuses recordings from now on ([`RecordError::Closed`], counted); the
    /// series held stay for the next flush. A harvester closes its batch
    /// before its final flush, so nothing recorded later is lost unnoticed.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("kept", 1.0, ()).await.unwrap();
    /// batch.close().await;
    /// assert_eq!(batch.record_count("late", 1.0, ()).await, Err(RecordError::Closed));
    /// assert_eq!(batch.flush().await.0.len(), 1); // what was held stays
    /// # }
    /// ```
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // A recording that took a shard lock before the flag was set finishes
        // before this returns; one that takes it later sees the flag.
        for shard in self.shards.iter() {
            drop(shard.lock());
        }
    }

    /// Takes every series out and starts a new interval.
    ///
    /// Returns the metrics and a common block with the batch's common
    /// attributes, `timestamp` = the start of the interval that ended, and
    /// `interval.ms` = its length. Each shard is swapped for an empty one under
    /// its lock in O(1); the metrics are built after the locks are released, so
    /// a large flush never blocks recording.
    ///
    /// ```
    /// use newrelic_telemetry::{Metric, MetricBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await.unwrap();
    /// batch.record_count("hits", 2.0, [("page", "/")]).await.unwrap();
    ///
    /// let (metrics, common) = batch.flush().await;
    /// match &metrics[..] {
    ///     [Metric::Count(c)] => assert_eq!(c.value(), 3.0),
    ///     other => panic!("unexpected: {other:?}"),
    /// }
    /// assert!(common.timestamp_ms().is_some() && common.interval_ms().is_some());
    /// assert_eq!(batch.series_count(), 0); // a new interval starts empty
    /// # }
    /// ```
    pub async fn flush(&self) -> (Vec<Metric>, Common) {
        self.take().await.release(&self.budget)
    }

    async fn take(&self) -> Taken<Metric> {
        let (previous, next) = {
            let mut clock = self.interval.lock().unwrap_or_else(|p| p.into_inner());
            (clock.roll(), *clock)
        };
        let mut taken = Vec::with_capacity(self.shards.len());
        let mut held_bytes = 0;
        for shard in self.shards.iter() {
            let old = std::mem::replace(&mut *shard.lock(), Shard::new(next));
            self.series.fetch_sub(old.series.len(), Ordering::Relaxed);
            held_bytes += old.held_bytes;
            taken.push(old);
        }
        // Already counted against the budget: the holder takes them over.
        let held = HeldBytes::adopt(Some(self.budget.clone()), held_bytes);
        let interval_ms =
            interval_millis(next.instant().saturating_duration_since(previous.instant()));
        let common = Common::new()
            .with_timestamp_ms(previous.start_ms())
            .with_interval_ms(interval_ms)
            .with_shared_attributes(self.common_attributes.clone());
        let mut metrics = Vec::with_capacity(taken.iter().map(|s| s.series.len()).sum());
        for shard in taken {
            let large = shard.series.len() >= FLUSH_YIELD_SERIES;
            metrics.extend(
                shard
                    .series
                    .into_iter()
                    .zip(shard.values)
                    .map(|(series, value)| series.into_metric(value)),
            );
            drop((shard.index, shard.strings, shard.sets));
            if large {
                // Building a large flush takes a while (fresh memory for the
                // metrics); let the worker's other tasks run in between.
                tokio::task::yield_now().await;
            }
        }
        Taken {
            items: metrics,
            common,
            held,
        }
    }

    /// What the pipeline holds in memory now (this batch's series, and what
    /// its harvester has taken from it and not yet sent), against its budget.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await.unwrap();
    /// let one = batch.memory();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await.unwrap(); // same series
    /// assert_eq!(batch.memory(), one);
    /// batch.record_count("hits", 1.0, [("page", "/about")]).await.unwrap();
    /// let two = batch.memory();
    /// assert_eq!((one.held_items, two.held_items), (1, 2));
    /// assert!(two.held_bytes > one.held_bytes);
    /// batch.flush().await; // the caller holds the metrics now, not the pipeline
    /// assert_eq!(batch.memory().held_bytes, 0);
    /// # }
    /// ```
    pub fn memory(&self) -> MemoryStats {
        self.budget.snapshot()
    }

    /// How many series the batch holds now.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await.unwrap();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await.unwrap(); // same series
    /// batch.record_count("hits", 1.0, [("page", "/about")]).await.unwrap();
    /// assert_eq!(batch.series_count(), 2);
    /// # }
    /// ```
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// What the batch refused or changed since it was created.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("hits", 1.0, [("value", "x")]).await.unwrap_err(); // reserved key
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    pub fn record_stats(&self) -> RecordStats {
        self.counters.snapshot()
    }

    /// The common attributes sent with every flush.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, attributes};
    ///
    /// let batch = MetricBatch::builder().common_attributes(attributes! { "host" => "web-1" }).build();
    /// assert_eq!(batch.common_attributes().unwrap().len(), 1);
    /// ```
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

    fn close(&self) -> impl std::future::Future<Output = ()> + Send {
        MetricBatch::close(self)
    }

    fn record_stats(&self) -> RecordStats {
        self.counters.snapshot()
    }

    fn take(&self) -> impl std::future::Future<Output = Taken<Metric>> + Send {
        MetricBatch::take(self)
    }

    fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_set_detects_duplicates_and_differences() {
        let stored = Attributes::from([("a", 1), ("b", 2)]);
        assert!(same_attributes(&stored, &[("b", 2), ("a", 1)]));
        assert!(!same_attributes(&stored, &[("a", 1), ("a", 1)]));
        assert!(!same_attributes(&stored, &[("a", 1), ("b", 3)]));
        assert!(!same_attributes(&stored, &[("a", 1)]));
        assert!(!same_attributes(
            &stored,
            &[("a", Value::from(1.0)), ("b", 2.into())]
        ));
    }

    #[test]
    fn large_sets_compare_by_binary_search() {
        let pairs: Vec<(String, i64)> = (0..20).map(|i| (format!("k{i:02}"), i)).collect();
        let stored = Attributes::from_source(&pairs);
        let mut reversed = pairs.clone();
        reversed.reverse();
        assert!(same_attributes(&stored, &reversed));
        let mut duplicated = pairs.clone();
        duplicated[19] = duplicated[0].clone();
        assert!(!same_attributes(&stored, &duplicated));
        let mut changed = pairs.clone();
        changed[7].1 = 70;
        assert!(!same_attributes(&stored, &changed));
    }
}
