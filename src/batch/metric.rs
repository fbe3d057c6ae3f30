//! The aggregating metric batch.
//!
//! Series live in shards picked by the series' hash, so tasks recording
//! different series rarely meet on a lock. Each shard is a
//! `tokio::sync::Mutex` on its own cache line, held only for the map work: a
//! lookup and an update on the hot path, an insertion of an already validated
//! series, a copy of the shard's segment list at flush, a removal of series
//! nobody uses any more.
//!
//! A series is found by a hash of (type, name, attribute set) computed from the
//! caller's borrowed pairs, and confirmed by comparing those pairs with the
//! stored ones, so recording into an existing series allocates nothing. Names,
//! attribute strings and whole attribute sets are interned per shard, so series
//! that share them share the memory.
//!
//! A series' value lives in atomics (see `series`), so handles bound to a
//! series ([`Counter`], [`Gauge`], [`SummaryHandle`]) record with no lock at
//! all, and a flush reads and resets each series without stopping anyone.
//! Series persist across flushes: a flush sends the series written to since
//! the previous one, and lets go of series that no handle holds once they have
//! been idle for a few harvests.

mod handle;
mod key;
mod series;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hashbrown::HashTable;
use tokio::sync::{Mutex, MutexGuard, Notify};

pub use handle::{Counter, Gauge, SummaryHandle};
use key::{HashBuilder, Seeds};
use series::{Drained, ItemDelta, Placement, Series, Shared, WallClock};

use super::{Batch, RecordCounters, RecordStats, Taken};
use crate::attributes::{AsAttributes, Attributes, Value};
use crate::budget::{
    DEFAULT_MEMORY_BUDGET, HeapSize, HeldBytes, MemoryBudget, MemoryStats, arc_str_bytes,
};
use crate::common::Common;
use crate::error::RecordError;
use crate::metric::{Metric, MetricKind, MetricValue, Summary};
use crate::time::{Clock, interval_millis};
use crate::validate::{
    METRIC_LIMITS, check_metric, check_metric_name, metric_attributes, sanitize_common,
};

/// Series a metric batch holds at most by default: 100,000. See
/// [`MetricBatchBuilder::max_series`].
pub const DEFAULT_MAX_SERIES: usize = 100_000;

/// Harvests a series that no handle holds may go without an update before it
/// leaves memory, by default; see [`MetricBatchBuilder::idle_harvests`].
///
/// ```
/// assert_eq!(newrelic_telemetry::batch::DEFAULT_IDLE_HARVESTS, 2);
/// ```
pub const DEFAULT_IDLE_HARVESTS: u8 = 2;

/// Series per segment of a shard (a power of two).
const SEGMENT_SHIFT: u32 = 8;
const SEGMENT: usize = 1 << SEGMENT_SHIFT;

/// A fixed run of a shard's series, filled from the front; shared with a
/// flush walking a snapshot (a shard that changes it meanwhile copies it).
type Segment = [Option<Series>; SEGMENT];

/// A flush yields to the runtime after draining this many series.
const FLUSH_YIELD_SERIES: usize = 4096;

/// Series removed per lock hold when a flush lets go of idle series.
const EVICT_CHUNK: usize = 256;

/// A batch of metrics that aggregates as it records.
///
/// A series is identified by its type, name and attribute set (in any order).
/// Counts add up, gauges keep the last value and when it was set, and summaries
/// merge each observation into count, sum, min and max. The batch tracks the
/// interval it aggregated over; [`flush`](Self::flush) returns the series
/// written to in that interval with a common block holding the interval's start
/// (`timestamp`) and length (`interval.ms`), and starts the next interval.
///
/// Record with a string call (`record_count(name, value, attributes).await`),
/// which finds the series by hashing and comparing what it is given, or bind a
/// series once ([`counter`](Self::counter), [`gauge`](Self::gauge),
/// [`summary`](Self::summary)) and record through the handle, synchronously and
/// with no lock.
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
/// let errors = batch.counter("errors", [("route", "/a")]).await?;
/// errors.add(1.0);
///
/// let (metrics, common) = batch.flush().await;
/// assert_eq!(metrics.len(), 4);
/// assert!(common.interval_ms().is_some());
/// # Ok(()) }
/// ```
pub struct MetricBatch {
    shards: Box<[ShardLock]>,
    /// The interval clock; held for a whole flush, so flushes never overlap.
    interval: Mutex<Clock>,
    hasher: HashBuilder,
    seeds: Seeds,
    common_attributes: Option<Arc<Attributes>>,
    max_series: usize,
    idle_harvests: u8,
    series: AtomicUsize,
    shared: Arc<Shared>,
    harvest: Notify,
}

impl std::fmt::Debug for MetricBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricBatch")
            .field("shards", &self.shards.len())
            .field("series", &self.series.load(Ordering::Relaxed))
            .field("max_series", &self.max_series)
            .field("idle_harvests", &self.idle_harvests)
            .field("common_attributes", &self.common_attributes)
            .field("memory", &self.shared.budget.snapshot())
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
}

/// A shard's lock, alone on its cache lines so that tasks working on
/// neighbouring shards do not invalidate each other's.
#[repr(align(128))]
struct ShardLock(Mutex<Shard>);

/// What a flush does with series that no handle holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Keep them until they have been idle for the batch's idle harvests.
    Idle,
    /// Let go of all of them: the caller takes everything out.
    All,
}

/// One shard: series in segments (so that a flush can take a snapshot of the
/// list in O(segments) and walk it with the lock released), an index over
/// them, and interners.
struct Shard {
    index: HashTable<u32>,
    segments: Vec<Arc<Segment>>,
    len: usize,
    strings: HashTable<Arc<str>>,
    sets: HashTable<(u64, Arc<Attributes>)>,
    /// What the shard's series, strings and sets hold, as counted against the
    /// budget.
    held_bytes: usize,
    /// Series left since the last sweep of the interners.
    sweep: bool,
}

/// A series seen for the first time, validated and canonicalised, with its
/// hashes: what an insertion needs under the shard's lock.
struct NewSeries<'n> {
    kind: MetricKind,
    name: &'n str,
    hash: u64,
    set_hash: u64,
    canonical: Attributes,
}

/// Takes a shard's lock for a recording (`lock_shard!(mutex)`, in an async
/// body): first one unit of the task's cooperative budget through Tokio's
/// own `consume_budget` (a task whose budget is spent yields there, before
/// it touches the lock; `lock()` takes the lock first and may then yield
/// holding it), then `try_lock`. A shard is held only for map work (tens of
/// nanoseconds), so a held lock is tried again up to [`SHARD_SPINS`] times,
/// with a spin hint between tries, before the task queues with
/// `lock().await` (spending a second unit there): parking a task and waking
/// it costs microseconds. A released Tokio lock goes to the first queued
/// waiter, never back to the pool while one waits, so `try_lock` cannot
/// jump the queue. Skipping the waiter `lock()` builds before it tries the
/// lock saves about 9% of the string path; spinning before parking took two
/// tasks on one batch from 0.7-0.9x to 1.4-1.6x the throughput of one
/// (BENCHMARKS.md). A macro, so that no future is nested in the
/// recording's own.
macro_rules! lock_shard {
    ($lock:expr) => {{
        let lock: &Mutex<Shard> = $lock;
        tokio::task::coop::consume_budget().await;
        match lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                let mut tries = 0;
                loop {
                    std::hint::spin_loop();
                    if let Ok(guard) = lock.try_lock() {
                        break guard;
                    }
                    tries += 1;
                    if tries == SHARD_SPINS {
                        break lock.lock().await;
                    }
                }
            }
        }
    }};
}

/// How many more times a recording tries a held shard lock before it queues
/// for it: 32 spin hints are well under a microsecond, longer than a shard
/// is held for a lookup and an update, shorter than a park and a wake.
const SHARD_SPINS: u32 = 32;

/// Every shard's lock, held until dropped (see `MetricBatch::hold_shards`).
#[cfg(all(test, feature = "metrics"))]
pub(crate) struct HeldShards<'a>(#[allow(dead_code)] Vec<tokio::sync::MutexGuard<'a, Shard>>);

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
fn new_series_bytes(
    kind: MetricKind,
    placement: Placement,
    name: &str,
    attrs: &Attributes,
) -> usize {
    Series::bytes(kind, placement)
        + arc_str_bytes(name.len())
        + STRING_SLOT_BYTES
        + SET_BYTES
        + attrs.held_bytes()
        + attrs.len() * 2 * STRING_SLOT_BYTES
}

fn set_bytes(set: &Attributes) -> usize {
    SET_BYTES + std::mem::size_of_val(set.pairs())
}

impl Shard {
    fn new() -> Self {
        Shard {
            index: HashTable::new(),
            segments: Vec::new(),
            len: 0,
            strings: HashTable::new(),
            sets: HashTable::new(),
            held_bytes: 0,
            sweep: false,
        }
    }

    #[inline(always)]
    fn at(segments: &[Arc<Segment>], position: u32) -> Option<&Series> {
        let p = position as usize;
        segments[p >> SEGMENT_SHIFT][p & (SEGMENT - 1)].as_ref()
    }

    /// The series, found from borrowed parts.
    #[inline]
    fn find(
        &self,
        hash: u64,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Option<&Series> {
        self.position(hash, kind, name, attrs)
            .and_then(|p| Shard::at(&self.segments, p))
    }

    /// Where the series is, found from borrowed parts.
    #[inline]
    fn position(
        &self,
        hash: u64,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Option<u32> {
        let segments = &self.segments;
        self.index
            .find(hash, |&p| {
                Shard::at(segments, p).is_some_and(|s| s.is(kind, name, attrs))
            })
            .copied()
    }

    /// The series at `position`, for a handle to bind to, moved into a
    /// block of its own first (see `series`) if it is packed, nothing else
    /// holds it (no handle, no flush walking its segment) and the budget has
    /// room for the difference. Otherwise it stays packed, which only costs
    /// speed when several threads write neighbouring series.
    fn bind_at(&mut self, position: u32, budget: &MemoryBudget) -> Option<Series> {
        let p = position as usize;
        let movable = Arc::get_mut(&mut self.segments[p >> SEGMENT_SHIFT])
            .and_then(|segment| segment[p & (SEGMENT - 1)].as_mut())
            .filter(|series| series.placement() == Placement::Packed && series.strong_count() == 1);
        if let Some(series) = movable {
            let kind = series.kind();
            let extra =
                Series::bytes(kind, Placement::Alone) - Series::bytes(kind, Placement::Packed);
            if budget.try_reserve_bytes(extra) {
                if series.isolate() {
                    self.held_bytes += extra;
                } else {
                    budget.release_bytes(extra);
                }
            }
        }
        Shard::at(&self.segments, position).cloned()
    }

    /// Appends a series (`hash` is its hash; the caller checked that its
    /// position fits a `u32`).
    fn push(&mut self, seeds: Seeds, hash: u64, series: Series) {
        let position = self.len as u32;
        if self.len % SEGMENT == 0 {
            self.segments.push(Arc::new(std::array::from_fn(|_| None)));
        }
        if let Some(last) = self.segments.last_mut() {
            // A flush walking a snapshot shares the segment: copy it then.
            Arc::make_mut(last)[self.len % SEGMENT] = Some(series);
        }
        self.len += 1;
        let segments = &self.segments;
        self.index.insert_unique(hash, position, |&p| {
            Shard::at(segments, p).map_or(0, |s| s.hash(seeds))
        });
    }

    /// Removes `series` if it is still here, unbound and quiet; returns
    /// whether it did.
    fn remove(&mut self, seeds: Seeds, series: &Series) -> bool {
        // The shard's reference and the caller's: no handle holds it; and
        // nothing was recorded into it since the flush read it.
        if series.strong_count() != 2 || !series.is_quiet() {
            return false;
        }
        let segments = &self.segments;
        let Ok(entry) = self.index.find_entry(series.hash(seeds), |&p| {
            Shard::at(segments, p).is_some_and(|s| s.ptr_eq(series))
        }) else {
            return false;
        };
        let (position, _) = entry.remove();
        let (p, last) = (position as usize, self.len - 1);
        if p != last {
            // The last series moves into the hole: its index entry follows.
            if let Some(moved) = Shard::at(segments, last as u32) {
                if let Some(slot) = self
                    .index
                    .find_mut(moved.hash(seeds), |&q| q as usize == last)
                {
                    *slot = position;
                }
            }
        }
        let Some(tail) = self.segments.last_mut().map(Arc::make_mut) else {
            return false;
        };
        let moved = tail[last & (SEGMENT - 1)].take();
        if last & (SEGMENT - 1) == 0 {
            self.segments.pop();
        }
        if p != last {
            Arc::make_mut(&mut self.segments[p >> SEGMENT_SHIFT])[p & (SEGMENT - 1)] = moved;
        }
        self.len -= 1;
        true
    }

    /// Lets go of interned strings and sets that no series (nor anything
    /// else) uses any more; returns the bytes freed.
    fn sweep(&mut self) -> usize {
        let mut freed = 0;
        self.sets.retain(|(_, set)| {
            let keep = Arc::strong_count(set) > 1;
            if !keep {
                freed += set_bytes(set);
            }
            keep
        });
        self.strings.retain(|s| {
            let keep = Arc::strong_count(s) > 1;
            if !keep {
                freed += arc_str_bytes(s.len()) + STRING_SLOT_BYTES;
            }
            keep
        });
        self.held_bytes -= freed;
        freed
    }

    fn intern_str(&mut self, hasher: &HashBuilder, s: &str) -> Arc<str> {
        use std::hash::BuildHasher;
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
        self.held_bytes += set_bytes(&attrs);
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
    idle_harvests: u8,
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

    /// The most series the batch holds (default 100,000). When it is reached,
    /// the batch asks its harvester for an early harvest (which lets go of
    /// idle series), and recording a new series fails with
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
    /// [`DEFAULT_MEMORY_BUDGET`](crate::batch::DEFAULT_MEMORY_BUDGET), 16 MiB; at
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

    /// How many harvests in a row a series may go without an update before
    /// it leaves memory, when no handle holds it (default
    /// [`DEFAULT_IDLE_HARVESTS`]). Keeping a series a little longer saves
    /// building it again when it is recorded into every few intervals; a
    /// series bound to a live [`Counter`], [`Gauge`] or [`SummaryHandle`]
    /// stays for as long as the handle lives. [`MetricBatch::flush`] and the
    /// last harvest of a closed batch let go of every unbound series at once.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// let batch = MetricBatch::builder().idle_harvests(5).build();
    /// assert_eq!(batch.series_count(), 0);
    /// ```
    pub fn idle_harvests(mut self, harvests: u8) -> Self {
        self.idle_harvests = harvests;
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
                .map(|_| ShardLock(Mutex::new(Shard::new())))
                .collect(),
            interval: Mutex::new(clock),
            seeds: Seeds::new(&hasher),
            hasher,
            common_attributes: self
                .common_attributes
                .map(|a| sanitize_common(a, &METRIC_LIMITS))
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            max_series: self.max_series,
            idle_harvests: self.idle_harvests,
            series: AtomicUsize::new(0),
            shared: Arc::new(Shared {
                budget: MemoryBudget::new(self.memory_budget),
                counters: RecordCounters::default(),
                closed: AtomicBool::new(false),
                clock: WallClock::new(&clock),
            }),
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
            memory_budget: DEFAULT_MEMORY_BUDGET,
            idle_harvests: DEFAULT_IDLE_HARVESTS,
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
    pub fn record_count(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        self.record(name, attributes, Update::Add(value.to_f64()))
    }

    /// Sets the gauge `name` with `attributes` to `value`, timestamped now (to
    /// within a few ms: on Linux, from the coarse monotonic clock).
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_gauge("memory.used", 512.0, [("unit", "MiB")]).await.unwrap();
    /// # }
    /// ```
    pub fn record_gauge(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        let update = Update::Set {
            value: value.to_f64(),
            timestamp_ms: None,
        };
        self.record(name, attributes, update)
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
    pub fn record_summary(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        self.record(name, attributes, Update::Observe(value.to_f64()))
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
        check_metric(&metric).map_err(|e| self.shared.counters.refused(e))?;
        let (name, attributes) = metric.shared_parts();
        self.record(name, &**attributes, update).await
    }

    /// Binds the count `name` with `attributes` once: validated now (and
    /// created if new, which the series limit and the memory budget may
    /// refuse), then [`Counter::add`] records into it synchronously, with no
    /// lock and no allocation. The series stays in the batch while a handle
    /// to it lives.
    ///
    /// Use a handle for a series recorded often from one place (a request
    /// counter, a `Drop` guard, a callback); use
    /// [`record_count`](Self::record_count) when the attributes vary from
    /// call to call.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
    /// let batch = Arc::new(MetricBatch::new());
    /// let requests = batch.counter("requests", [("route", "/orders")]).await?;
    ///
    /// // Synchronous: usable from a thread, a callback or a Drop impl.
    /// let worker = {
    ///     let requests = requests.clone();
    ///     std::thread::spawn(move || (0..1000).for_each(|_| requests.add(1.0)))
    /// };
    /// worker.join().unwrap();
    /// // The string form records into the same series.
    /// batch.record_count("requests", 1.0, [("route", "/orders")]).await?;
    ///
    /// let (metrics, _) = batch.flush().await;
    /// assert_eq!(metrics.len(), 1);
    /// assert!(matches!(&metrics[0], newrelic_telemetry::Metric::Count(c) if c.value() == 1001.0));
    /// # Ok(()) }
    /// ```
    pub async fn counter(
        &self,
        name: impl AsRef<str>,
        attributes: impl AsAttributes,
    ) -> Result<Counter, RecordError> {
        let series = self
            .bind(MetricKind::Count, name.as_ref(), &attributes)
            .await?;
        Ok(self.counter_of(series))
    }

    fn counter_of(&self, series: Series) -> Counter {
        match series.cell.count() {
            Some(cell) => Counter::new(series, cell, self.shared.clone()),
            None => unreachable!("series are found by their type"),
        }
    }

    /// Binds the gauge `name` with `attributes` once; then [`Gauge::set`]
    /// records into it synchronously, with no lock and no allocation. See
    /// [`counter`](Self::counter).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), newrelic_telemetry::RecordError> {
    /// let batch = MetricBatch::new();
    /// let connections = batch.gauge("db.connections", [("pool", "main")]).await?;
    /// connections.set(12.0);
    /// assert_eq!(batch.flush().await.0.len(), 1);
    /// assert!(batch.flush().await.0.is_empty()); // not set since: not sent
    /// # Ok(()) }
    /// ```
    pub async fn gauge(
        &self,
        name: impl AsRef<str>,
        attributes: impl AsAttributes,
    ) -> Result<Gauge, RecordError> {
        let series = self
            .bind(MetricKind::Gauge, name.as_ref(), &attributes)
            .await?;
        Ok(self.gauge_of(series))
    }

    fn gauge_of(&self, series: Series) -> Gauge {
        match series.cell.gauge() {
            Some(cell) => Gauge::new(series, cell, self.shared.clone()),
            None => unreachable!("series are found by their type"),
        }
    }

    /// Binds the summary `name` with `attributes` once; then
    /// [`SummaryHandle::record`] records into it synchronously, with no lock
    /// and no allocation. See [`counter`](Self::counter).
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let latency = batch.summary("latency.ms", [("route", "/")]).await.unwrap();
    /// latency.record(3.5);
    /// // Validation happens once, when binding.
    /// assert!(matches!(
    ///     batch.summary("latency.ms", [("count", 1)]).await,
    ///     Err(RecordError::ReservedAttribute { .. })
    /// ));
    /// # }
    /// ```
    pub async fn summary(
        &self,
        name: impl AsRef<str>,
        attributes: impl AsAttributes,
    ) -> Result<SummaryHandle, RecordError> {
        let series = self
            .bind(MetricKind::Summary, name.as_ref(), &attributes)
            .await?;
        Ok(self.summary_of(series))
    }

    fn summary_of(&self, series: Series) -> SummaryHandle {
        match series.cell.summary() {
            Some(cell) => SummaryHandle::new(series, cell, self.shared.clone()),
            None => unreachable!("series are found by their type"),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // Bits 32.. are used neither for hashbrown's bucket index at these sizes
        // nor for its control byte (the top 7 bits).
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)].0
    }

    /// Records into an existing series under its shard's lock, or creates it.
    #[inline]
    async fn record(
        &self,
        name: impl AsRef<str>,
        attrs: impl AsAttributes,
        update: Update,
    ) -> Result<(), RecordError> {
        let (name, attrs) = (name.as_ref(), &attrs);
        if !update.is_valid() {
            return Err(self.invalid(name, update));
        }
        let kind = update.kind();
        let hash = self.seeds.series(kind, name, self.seeds.set(attrs));
        {
            let shard = lock_shard!(self.shard(hash));
            if let Some(series) = shard.find(hash, kind, name, attrs) {
                // Read under the lock, so that a recording either lands
                // before the final flush or is refused.
                if self.shared.closed.load(Ordering::Relaxed) {
                    drop(shard);
                    return Err(self.shared.counters.refused(RecordError::Closed));
                }
                if series.apply(update, &self.shared) {
                    return Ok(());
                }
                drop(shard);
                return Err(self.overflow(name));
            }
        }
        self.insert(kind, name, attrs, Some(update)).await.map(drop)
    }

    #[cold]
    fn invalid(&self, name: &str, update: Update) -> RecordError {
        self.shared
            .counters
            .refused(if matches!(update, Update::Merge(_)) {
                RecordError::InvalidSummary
            } else {
                RecordError::NonFiniteValue {
                    name: name.to_owned(),
                }
            })
    }

    /// Under a shard's lock: the series, if it is there, for a handle to
    /// bind to (see `Shard::bind_at`), or `Closed`; `None` if it is not there.
    fn bind_existing(
        &self,
        shard: &mut Shard,
        hash: u64,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Option<Result<Series, RecordError>> {
        let position = shard.position(hash, kind, name, attrs)?;
        if self.shared.closed.load(Ordering::Relaxed) {
            return Some(Err(self.shared.counters.refused(RecordError::Closed)));
        }
        shard.bind_at(position, &self.shared.budget).map(Ok)
    }

    /// Finds or creates the series a handle binds to.
    async fn bind(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Result<Series, RecordError> {
        let hash = self.seeds.series(kind, name, self.seeds.set(attrs));
        {
            let mut shard = lock_shard!(self.shard(hash));
            if let Some(bound) = self.bind_existing(&mut shard, hash, kind, name, attrs) {
                return bound;
            }
        }
        match self.insert(kind, name, attrs, None).await? {
            Some(series) => Ok(series),
            None => unreachable!("an insertion with no update returns its series"),
        }
    }

    /// Binds a count handle without waiting, for callers that cannot await
    /// (the `metrics` recorder's registration): like [`counter`](Self::counter),
    /// but `Ok(None)` when a shard's lock is taken at that moment, and the
    /// caller binds later with `counter().await`. Never blocks.
    #[cfg(feature = "metrics")]
    pub(crate) fn try_counter(
        &self,
        name: &str,
        attributes: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<Counter>, RecordError> {
        let series = self.try_bind(MetricKind::Count, name, attributes)?;
        Ok(series.map(|s| self.counter_of(s)))
    }

    /// [`try_counter`](Self::try_counter) for a gauge.
    #[cfg(feature = "metrics")]
    pub(crate) fn try_gauge(
        &self,
        name: &str,
        attributes: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<Gauge>, RecordError> {
        let series = self.try_bind(MetricKind::Gauge, name, attributes)?;
        Ok(series.map(|s| self.gauge_of(s)))
    }

    /// [`try_counter`](Self::try_counter) for a summary.
    #[cfg(feature = "metrics")]
    pub(crate) fn try_summary(
        &self,
        name: &str,
        attributes: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<SummaryHandle>, RecordError> {
        let series = self.try_bind(MetricKind::Summary, name, attributes)?;
        Ok(series.map(|s| self.summary_of(s)))
    }

    /// Takes every shard's lock, as a recording or a flush would for a moment
    /// (tests of what cannot wait for one).
    #[cfg(all(test, feature = "metrics"))]
    pub(crate) fn hold_shards(&self) -> HeldShards<'_> {
        HeldShards(
            self.shards
                .iter()
                .filter_map(|s| s.0.try_lock().ok())
                .collect(),
        )
    }

    /// [`bind`](Self::bind) with `try_lock` for the shard's lock: `Ok(None)`
    /// if it is taken (a lock is never held across an `.await`, but a tokio
    /// mutex may be handed to a waiting task that has yet to run, on this
    /// very thread).
    #[cfg(feature = "metrics")]
    fn try_bind(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<Series>, RecordError> {
        let hash = self.seeds.series(kind, name, self.seeds.set(attrs));
        {
            let Ok(mut shard) = self.shard(hash).try_lock() else {
                return Ok(None);
            };
            if let Some(bound) = self.bind_existing(&mut shard, hash, kind, name, attrs) {
                return bound.map(Some);
            }
        }
        let new = self.prepare(kind, name, attrs)?;
        let Ok(guard) = self.shard(new.hash).try_lock() else {
            return Ok(None);
        };
        self.insert_locked(guard, new, None)
    }

    /// The slow path: validates and canonicalises a series seen for the first
    /// time (outside any lock), then inserts it, or finds it if another task
    /// (or a differently spelled attribute list) got there first. With an
    /// update, applies it and returns `None`; without, returns the series.
    #[inline(never)]
    async fn insert(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
        update: Option<Update>,
    ) -> Result<Option<Series>, RecordError> {
        let new = self.prepare(kind, name, attrs)?;
        let guard = lock_shard!(self.shard(new.hash));
        self.insert_locked(guard, new, update)
    }

    /// Validates and canonicalises a new series (no lock held).
    fn prepare<'n>(
        &self,
        kind: MetricKind,
        name: &'n str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Result<NewSeries<'n>, RecordError> {
        let counters = &self.shared.counters;
        check_metric_name(name).map_err(|e| counters.refused(e))?;
        let (canonical, truncations) =
            metric_attributes(name, attrs).map_err(|e| counters.refused(e))?;
        counters.truncated(truncations);
        let set_hash = self.seeds.set(&canonical);
        Ok(NewSeries {
            kind,
            name,
            hash: self.seeds.series(kind, name, set_hash),
            set_hash,
            canonical,
        })
    }

    /// Inserts a prepared series under its shard's lock (`guard`), or finds
    /// it; see [`insert`](Self::insert).
    fn insert_locked(
        &self,
        mut guard: MutexGuard<'_, Shard>,
        new: NewSeries<'_>,
        update: Option<Update>,
    ) -> Result<Option<Series>, RecordError> {
        let counters = &self.shared.counters;
        let NewSeries {
            kind,
            name,
            hash,
            set_hash,
            canonical,
        } = new;
        if self.shared.closed.load(Ordering::Relaxed) {
            drop(guard);
            return Err(counters.refused(RecordError::Closed));
        }
        let shard = &mut *guard;
        match update {
            None => {
                if let Some(bound) = self.bind_existing(shard, hash, kind, name, &canonical) {
                    return bound.map(Some);
                }
            }
            Some(update) => {
                if let Some(series) = shard.find(hash, kind, name, &canonical) {
                    if series.apply(update, &self.shared) {
                        return Ok(None);
                    }
                    drop(guard);
                    return Err(self.overflow(name));
                }
            }
        }
        let held = self.series.fetch_add(1, Ordering::Relaxed);
        if held >= self.max_series || u32::try_from(shard.len).is_err() {
            self.series.fetch_sub(1, Ordering::Relaxed);
            drop(guard);
            self.harvest.notify_one();
            return Err(counters.refused(RecordError::SeriesLimitReached {
                limit: self.max_series,
            }));
        }
        // Room for the series as if everything in it were new; what interning
        // shares is given back right after. A series created by a recording
        // holds something to send: it counts as an item too. A series made
        // for a handle gets a cell of its own (see `series`).
        let placement = match update {
            Some(_) => Placement::Packed,
            None => Placement::Alone,
        };
        let most = new_series_bytes(kind, placement, name, &canonical);
        let budget = &self.shared.budget;
        let reserved = match update {
            Some(_) => budget.try_reserve_item(most),
            None => budget.try_reserve_bytes(most),
        };
        if !reserved {
            self.series.fetch_sub(1, Ordering::Relaxed);
            drop(guard);
            self.harvest.notify_one();
            return Err(counters.refused(RecordError::MemoryBudgetFull {
                budget_bytes: budget.limit(),
            }));
        }
        if held + 1 == self.max_series.div_ceil(2) {
            // Half full: ask for an early harvest before anything is refused.
            self.harvest.notify_one();
        }
        let before = shard.held_bytes;
        let interned_name = shard.intern_str(&self.hasher, name);
        let attributes = shard.intern_set(&self.hasher, set_hash, canonical);
        let series = Series::new(kind, interned_name, attributes, placement);
        if let Some(update) = update {
            // Marked first: its item was counted with its room. A single
            // valid update cannot overflow a new series.
            series.mark_new();
            series.apply(update, &self.shared);
        }
        let bound = update.is_none().then(|| series.clone());
        shard.held_bytes += series.held_bytes();
        shard.push(self.seeds, hash, series);
        budget.release_bytes(most.saturating_sub(shard.held_bytes - before));
        Ok(bound)
    }

    #[cold]
    fn overflow(&self, name: &str) -> RecordError {
        self.shared
            .counters
            .refused(RecordError::AggregateOverflow {
                name: name.to_owned(),
            })
    }

    /// Refuses recordings from now on ([`RecordError::Closed`], counted; a
    /// handle's writes are ignored and counted); the series held stay for
    /// the next flush. A harvester closes its batch before its final flush,
    /// so nothing recorded later is lost unnoticed (a handle's write racing
    /// with the close itself may miss the final flush).
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("kept", 1.0, ()).await.unwrap();
    /// let late = batch.counter("late", ()).await.unwrap();
    /// batch.close().await;
    /// assert_eq!(batch.record_count("late", 1.0, ()).await, Err(RecordError::Closed));
    /// late.add(1.0); // ignored and counted
    /// assert_eq!(batch.record_stats().items_dropped_closed, 2);
    /// assert_eq!(batch.flush().await.0.len(), 1); // what was held stays
    /// # }
    /// ```
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // A recording that took a shard lock before the flag was set finishes
        // before this returns; one that takes it later sees the flag.
        for shard in self.shards.iter() {
            drop(shard.0.lock().await);
        }
    }

    /// Takes out what was recorded since the last flush and starts a new
    /// interval.
    ///
    /// Returns a metric for every series written to in the interval, and a
    /// common block with the batch's common attributes, `timestamp` = the
    /// start of the interval that ended, and `interval.ms` = its length.
    /// Series that no handle holds leave the batch (a new interval starts
    /// empty); series bound to a live handle stay, reset, and are sent again
    /// only once written to. Each shard's lock is held only to copy its list
    /// of segments and to remove series; series are read and reset with the
    /// locks released, so a large flush never blocks recording.
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
        self.drain(Release::All).await.release(&self.shared.budget)
    }

    /// A harvest: like [`flush`](Self::flush), but unbound series stay until
    /// they have been idle for `idle_harvests` harvests (all go once the
    /// batch is closed), and what is taken stays counted against the budget.
    async fn take(&self) -> Taken<Metric> {
        let release = if self.shared.closed.load(Ordering::SeqCst) {
            Release::All
        } else {
            Release::Idle
        };
        self.drain(release).await
    }

    async fn drain(&self, release: Release) -> Taken<Metric> {
        let mut clock = self.interval.lock().await;
        let previous = clock.roll();
        self.shared.clock.align(&clock);
        let interval_ms = interval_millis(
            clock
                .instant()
                .saturating_duration_since(previous.instant()),
        );
        let budget = &self.shared.budget;
        let mut metrics = Vec::new();
        let mut items = ItemDelta::default();
        // Interned strings and sets of shards left empty: handed over with
        // the metrics that use them, still counted.
        let mut handed_bytes = 0;
        let mut since_yield = 0;
        for shard in self.shards.iter() {
            let segments = shard.0.lock().await.segments.clone();
            let mut leaving = 0;
            let mut walked = 0;
            for series in segments
                .iter()
                .flat_map(|s| s.iter().map_while(Option::as_ref))
            {
                walked += 1;
                let emitted = match series.drain(&mut metrics, &mut items, clock.start_ms()) {
                    Drained::Done(emitted) => emitted,
                    Drained::Pending(flipped) => {
                        // An observation is being recorded on another thread.
                        while !series.ready(&flipped) {
                            tokio::task::yield_now().await;
                        }
                        series.finish(&flipped, &mut metrics, &mut items)
                    }
                };
                let idle = series.note_idle(emitted);
                if series.strong_count() == 1
                    && (release == Release::All || idle >= self.idle_harvests)
                {
                    leaving += 1;
                }
            }
            since_yield += walked;
            if leaving > 0 && leaving == walked {
                // Every series goes (a flush() with no handles, the last
                // harvest): take the whole shard out, unless it changed.
                drop(segments);
                if let Some(bytes) = self.remove_all(shard, walked).await {
                    handed_bytes += bytes;
                    continue;
                }
                let segments = shard.0.lock().await.segments.clone();
                let leaving = self.leaving(&segments, release);
                drop(segments);
                handed_bytes += self.remove(shard, leaving, release).await;
            } else {
                let leaving = if leaving == 0 {
                    Vec::new()
                } else {
                    self.leaving(&segments, release)
                };
                drop(segments);
                handed_bytes += self.remove(shard, leaving, release).await;
            }
            if since_yield >= FLUSH_YIELD_SERIES {
                since_yield = 0;
                // Reading a large shard takes a while; let the worker's other
                // tasks run in between.
                tokio::task::yield_now().await;
            }
        }
        drop(clock);
        items.apply(budget);
        let metric_bytes = metrics.capacity() * std::mem::size_of::<Metric>();
        budget.add_bytes(metric_bytes);
        let held = HeldBytes::adopt(Some(budget.clone()), metric_bytes + handed_bytes);
        let common = Common::new()
            .with_timestamp_ms(previous.start_ms())
            .with_interval_ms(interval_ms)
            .with_shared_attributes(self.common_attributes.clone());
        Taken {
            items: metrics,
            common,
            held,
        }
    }

    /// The series of a shard snapshot that no handle holds and that may go.
    fn leaving(&self, segments: &[Arc<Segment>], release: Release) -> Vec<Series> {
        segments
            .iter()
            .flat_map(|s| s.iter().map_while(Option::as_ref))
            .filter(|s| {
                s.strong_count() == 1 && (release == Release::All || s.idle() >= self.idle_harvests)
            })
            .cloned()
            .collect()
    }

    /// Empties the shard if it still holds exactly the `walked` series a flush
    /// walked, all of them unbound and quiet; the series are dropped with the
    /// lock released. Returns the bytes of interned strings and sets handed
    /// over with the metrics, or `None` if the shard changed.
    async fn remove_all(&self, shard: &ShardLock, walked: usize) -> Option<usize> {
        let budget = &self.shared.budget;
        let mut guard = shard.0.lock().await;
        if guard.len != walked {
            return None;
        }
        let mut series_bytes = 0;
        for series in guard
            .segments
            .iter()
            .flat_map(|s| s.iter().map_while(Option::as_ref))
        {
            if series.strong_count() != 1 || !series.is_quiet() {
                return None;
            }
            series_bytes += series.held_bytes();
        }
        let old = std::mem::replace(&mut *guard, Shard::new());
        drop(guard);
        self.series.fetch_sub(walked, Ordering::Relaxed);
        budget.release_bytes(series_bytes);
        let handed = old.held_bytes - series_bytes;
        drop(old);
        Some(handed)
    }

    /// Removes `leaving` from the shard (those still unbound and quiet), a
    /// chunk per lock hold, and sweeps its interners. Returns the bytes of
    /// interned strings and sets handed over instead of freed (a shard left
    /// empty by [`Release::All`]).
    async fn remove(&self, shard: &ShardLock, leaving: Vec<Series>, release: Release) -> usize {
        let budget = &self.shared.budget;
        let mut removed = 0;
        for chunk in leaving.chunks(EVICT_CHUNK) {
            let mut guard = shard.0.lock().await;
            let mut n = 0;
            let mut bytes = 0;
            for series in chunk {
                if guard.remove(self.seeds, series) {
                    n += 1;
                    bytes += series.held_bytes();
                }
            }
            guard.held_bytes -= bytes;
            guard.sweep |= n > 0;
            budget.release_bytes(bytes);
            removed += n;
        }
        drop(leaving);
        self.series.fetch_sub(removed, Ordering::Relaxed);
        let mut guard = shard.0.lock().await;
        if !guard.sweep {
            return 0;
        }
        if guard.len == 0 && release == Release::All {
            // Everything went: the interners go with the metrics.
            let handed = guard.held_bytes;
            *guard = Shard::new();
            return handed;
        }
        let freed = guard.sweep();
        // Strings and sets still used by metrics just taken are swept next time.
        guard.sweep = removed > 0;
        budget.release_bytes(freed);
        0
    }

    /// What the pipeline holds in memory now (this batch's series, and what
    /// its harvester has taken from it and not yet sent), against its budget.
    /// A series counts as an item while it holds something not yet flushed.
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
        self.shared.budget.snapshot()
    }

    /// How many series the batch holds now (written to or bound to a handle,
    /// and not yet let go of).
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
        self.shared.counters.snapshot()
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
        self.shared.counters.snapshot()
    }

    fn take(&self) -> impl std::future::Future<Output = Taken<Metric>> + Send {
        MetricBatch::take(self)
    }

    fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.shared.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one count a flush sends.
    async fn flushed_count(batch: &MetricBatch) -> f64 {
        match batch.flush().await.0.as_slice() {
            [Metric::Count(count)] => count.value(),
            other => panic!("one count was sent: {other:?}"),
        }
    }

    /// The placement of the only series of a one-shard batch.
    async fn placement(batch: &MetricBatch) -> Placement {
        let shard = batch.shards[0].0.lock().await;
        Shard::at(&shard.segments, 0)
            .map(Series::placement)
            .expect("the batch holds a series")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_bind_while_a_flush_walks_the_segment_leaves_the_cell_packed() {
        let batch = MetricBatch::builder().shards(1).build();
        batch.record_count("hits", 2.0, [("k", "v")]).await.unwrap();
        // What a flush holds while it walks the shard with the lock released.
        let walking = batch.shards[0].0.lock().await.segments.clone();
        let held = batch.memory().held_bytes;
        let handle = batch.counter("hits", [("k", "v")]).await.unwrap();
        assert_eq!(placement(&batch).await, Placement::Packed);
        assert_eq!(
            batch.memory().held_bytes,
            held,
            "nothing reserved for a move not made"
        );
        drop(walking);
        handle.add(1.0);
        // A handle holds it now: it stays packed while any handle lives.
        let again = batch.counter("hits", [("k", "v")]).await.unwrap();
        assert_eq!(placement(&batch).await, Placement::Packed);
        drop((handle, again));
        // Nothing else holds it: the next bind moves it, value included.
        let moved = batch.counter("hits", [("k", "v")]).await.unwrap();
        assert_eq!(placement(&batch).await, Placement::Alone);
        moved.add(4.0);
        assert_eq!(flushed_count(&batch).await, 7.0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_bind_without_room_to_move_keeps_the_cell_packed_and_works() {
        let batch = MetricBatch::builder().shards(1).build();
        batch.record_count("hits", 2.0, [("k", "v")]).await.unwrap();
        let budget = &batch.shared.budget;
        // Fill the budget to the last byte.
        let mut filled = 0;
        let mut chunk = budget.limit();
        while chunk > 0 {
            if budget.try_reserve_bytes(chunk) {
                filled += chunk;
            } else {
                chunk /= 2;
            }
        }
        let held = budget.held_bytes();
        let handle = batch.counter("hits", [("k", "v")]).await.unwrap();
        assert_eq!(placement(&batch).await, Placement::Packed);
        assert_eq!(budget.held_bytes(), held);
        handle.add(1.0);
        budget.release_bytes(filled);
        assert_eq!(flushed_count(&batch).await, 3.0);
    }

    /// The `metrics` recorder binds without waiting (`try_counter`): a series
    /// recorded by name moves the same way.
    #[cfg(feature = "metrics")]
    #[tokio::test(flavor = "current_thread")]
    async fn binding_without_waiting_moves_the_cell_too() {
        let batch = MetricBatch::builder().shards(1).build();
        batch.record_count("hits", 2.0, [("k", "v")]).await.unwrap();
        let handle = batch
            .try_counter("hits", &[("k", "v")])
            .unwrap()
            .expect("the shard is free");
        assert_eq!(placement(&batch).await, Placement::Alone);
        handle.add(1.0);
        assert_eq!(flushed_count(&batch).await, 3.0);
    }
}
