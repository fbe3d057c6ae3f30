//! The aggregating metric batch.
//!
//! Series live in shards picked by the series' hash. Recording into an
//! existing series takes no lock: each shard publishes a table (`index`)
//! that a recording reads through its thread's cache (`reader`), finding the
//! series from a hash of (type, name, attribute set) computed from the
//! caller's borrowed pairs and confirmed by comparing those pairs with the
//! stored ones, then writes the series' atomics (`series`). Nothing shared
//! is written but the series itself, so threads recording into different
//! series never meet, and recording allocates nothing.
//!
//! Each shard's `tokio::sync::Mutex` (`shard`) guards the batch's
//! structure: creating a series (validated and canonicalised outside the
//! lock, then checked against the series limit and the memory budget),
//! growing the table, and letting go of series at a flush (`drain`). Names,
//! attribute strings and whole attribute sets are interned per shard, so
//! series that share them share the memory.
//!
//! Each metric name holds at most its series limit of series
//! (`cardinality`): past it, or when the batch has no room left, a new
//! attribute set is recorded into the name's overflow series, which is found
//! with no lock like any other series and whose room every name keeps from
//! its first series on.
//!
//! Handles bound to a series ([`CounterHandle`], [`GaugeHandle`], [`SummaryHandle`])
//! write the same atomics with no lookup at all, and a flush reads and
//! resets each series without stopping anyone. Series persist across
//! flushes: a flush sends the series written to since the previous one, and
//! lets go of series that no handle holds once they have been idle for a
//! few harvests.

mod buckets;
mod cardinality;
mod drain;
mod handle;
mod index;
mod key;
#[cfg(test)]
mod properties;
mod reader;
mod series;
mod shard;
mod sketch;

use std::convert::identity;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use tokio::sync::{Mutex, MutexGuard, Notify};

pub(crate) use cardinality::SeriesLimits;
pub use cardinality::{DEFAULT_SERIES_LIMIT, NameOverflow, OVERFLOW_ATTRIBUTE};
use cardinality::{NameState, Names, SAMPLE_EVERY};
use drain::Release;
pub use handle::{CounterHandle, DistributionHandle, GaugeHandle, SummaryHandle};
use index::Table;
use key::{HashBuilder, Seeds, str_eq};
use series::{Applied, Placement, Series, Shared, WallClock};
use shard::{Shard, ShardLock, new_series_bytes, overflow_series_bytes};

use super::refusal::{OnRefused, Refusals};
use super::{Batch, ItemBatch, RecordStats, Taken};
use crate::attributes::{AsAttributes, Attributes};
use crate::budget::{DEFAULT_MEMORY_BUDGET, MemoryBudget, MemoryStats};
use crate::common::Common;
use crate::distribution::DistributionPoint;
use crate::error::RecordError;
use crate::metric::{Metric, MetricKind, MetricValue, Summary};
use crate::time::Clock;
use crate::validate::{
    METRIC_LIMITS, check_metric, check_metric_name, metric_attributes, sanitize_common,
};

/// Times an insertion tries again when the name it diverts to leaves the
/// batch meanwhile (a flush letting go of its last series).
const INSERT_ATTEMPTS: usize = 3;

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
/// batch.record_count("requests", 1.0, [("route", "/a")]).await;
/// batch.record_count("requests", 2.0, [("route", "/a")]).await;
/// batch.record_gauge("queue.depth", 7.0, ()).await;
/// batch.record_summary("latency.ms", 12.5, [("route", "/a")]).await;
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
    /// Series held, and rooms reserved for overflow series not made yet
    /// (`reservations`): what `max_series` bounds.
    series: AtomicUsize,
    reservations: AtomicUsize,
    shared: Arc<Shared>,
    harvest: Notify,
    /// Series let go of that a recording wrote into after their last read
    /// (see `drain`): read at the next flush.
    orphans: std::sync::Mutex<Vec<Series>>,
    /// Series limits and counts per name (see `cardinality`); taken under a
    /// shard's lock, never the other way round.
    names: std::sync::Mutex<Names>,
    /// The attribute set of every overflow series, and its hash.
    overflow_set: Arc<Attributes>,
    overflow_set_hash: u64,
    /// What `record_histogram` records.
    histograms: HistogramKind,
    /// Where each flush puts the points of distribution series.
    distributions: Arc<ItemBatch<DistributionPoint>>,
    /// A distribution series was made: the distributions need a pipeline.
    distributions_used: AtomicBool,
    distributions_made: Notify,
    /// Cancelled once a harvest of the closed batch has put its last
    /// points into `distributions`: their harvester may stop.
    last_flush: tokio_util::sync::CancellationToken,
    /// A disabled `Telemetry`'s batch: recording by name does nothing.
    off: bool,
}

impl std::fmt::Debug for MetricBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricBatch")
            .field("shards", &self.shards.len())
            .field("series", &self.series_count())
            .field("max_series", &self.max_series)
            .field("idle_harvests", &self.idle_harvests)
            .field("common_attributes", &self.common_attributes)
            .field("memory", &self.shared.budget.snapshot())
            .finish_non_exhaustive()
    }
}

/// What [`MetricBatch::record_histogram`] records, and so what the HTTP
/// server middleware's request durations and the `metrics` facade's
/// `histogram!` become.
///
/// ```
/// use newrelic_telemetry::{HistogramKind, Metric, MetricBatch};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // By default, a distribution: a point for the OTLP endpoint.
/// let batch = MetricBatch::new();
/// batch.record_histogram("render.ms", 4.0, ()).await;
/// assert!(batch.flush().await.0.is_empty());
/// assert_eq!(batch.distributions().flush().await.0.len(), 1);
///
/// // With `Summary`, a summary for the Metric API.
/// let summaries = MetricBatch::builder().histogram_kind(HistogramKind::Summary).build();
/// summaries.record_histogram("render.ms", 4.0, ()).await;
/// assert!(matches!(&summaries.flush().await.0[..], [Metric::Summary(_)]));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistogramKind {
    /// A distribution (the default): percentiles in New Relic, sent over
    /// OTLP ([`MetricBatch::record_distribution`]).
    #[default]
    Distribution,
    /// A summary: count, sum, min and max, sent to the Metric API with the
    /// other metrics ([`MetricBatch::record_summary`]).
    Summary,
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
    Distribute(f64),
}

impl Update {
    fn kind(self) -> MetricKind {
        match self {
            Update::Add(_) => MetricKind::Count,
            Update::Set { .. } => MetricKind::Gauge,
            Update::Observe(_) | Update::Merge(_) => MetricKind::Summary,
            Update::Distribute(_) => MetricKind::Distribution,
        }
    }

    fn is_valid(self) -> bool {
        match self {
            Update::Add(v)
            | Update::Set { value: v, .. }
            | Update::Observe(v)
            | Update::Distribute(v) => v.is_finite(),
            Update::Merge(s) => s.is_valid(),
        }
    }
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

/// What an insertion did.
enum Inserted<'n> {
    /// Recorded (`None`), or made or found the series to bind (`Some`).
    Done(Option<Series>),
    /// Found no room for a new series of the name (its limit, or the
    /// batch's): handed back for the name's overflow series.
    Divert(NewSeries<'n>),
}

/// What a diversion into a name's overflow series did.
enum Diverted<'n> {
    /// Recorded (`None`), or bound (`Some`).
    Done(Option<Series>),
    /// The name left the batch meanwhile (a flush let go of its last
    /// series): handed back to be made after all.
    NameLeft(NewSeries<'n>),
}

/// What a recording by name did with the series it found.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Found {
    /// Recorded (into a series let go of meanwhile too: the next flush
    /// reads it, see `orphan`).
    Recorded,
    /// Refused: the batch is closed.
    Closed,
    /// Refused: the aggregate would stop being finite.
    AggregateOverflow,
}

/// Counts a measurement recorded into an overflow series; returns whether
/// it is one of the sample its name's census reads.
#[inline(always)]
fn diverted(series: &Series, found: Found) -> bool {
    found == Found::Recorded && series.note_diverted() % SAMPLE_EVERY == 0
}

/// The outcome of a fire-and-forget recording: a refusal was counted,
/// logged and handed to the callback already.
fn forget(_: Result<(), RecordError>) {}

/// Every shard's lock, held until dropped (see `MetricBatch::hold_shards`).
#[cfg(all(test, feature = "metrics"))]
pub(crate) struct HeldShards<'a>(#[allow(dead_code)] Vec<tokio::sync::MutexGuard<'a, Shard>>);

/// Configures a [`MetricBatch`].
///
/// ```
/// use newrelic_telemetry::{Attributes, MetricBatch, attrs};
///
/// let batch = MetricBatch::builder()
///     .common_attributes(attrs!["host" => "web-1"])
///     .max_series(10_000)
///     .build();
/// assert_eq!(batch.common_attributes(), Some(&Attributes::from(attrs!["host" => "web-1"])));
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
    series_limits: SeriesLimits,
    histograms: HistogramKind,
    on_refused: Option<OnRefused>,
    off: bool,
}

impl MetricBatchBuilder {
    /// Attributes sent once per payload in the common block. Invalid pairs are
    /// removed with a warning. Called again, it merges: a key given again
    /// takes the new value, as in
    /// [`TelemetryBuilder::common_attributes`](crate::TelemetryBuilder::common_attributes).
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, attrs};
    ///
    /// let batch = MetricBatch::builder()
    ///     .common_attributes(attrs!["host" => "web-1", "env" => "staging"])
    ///     .common_attributes(attrs!["env" => "prod"])
    ///     .build();
    /// let common = batch.common_attributes().unwrap();
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

    /// The most series the batch holds (default 100,000), counting the room
    /// each metric name keeps for its overflow series (see
    /// [`series_limit`](Self::series_limit)). When it is reached, the batch
    /// asks its harvester for an early harvest (which lets go of idle
    /// series); until then a new series of a name the batch holds goes to
    /// the name's overflow series, and the first series of a new name is
    /// refused with [`RecordError::SeriesLimitReached`]. Existing series
    /// keep aggregating.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().max_series(2).build();
    /// batch.record_count("a", 1.0, [("id", 1)]).await; // "a" and room for its overflow series
    /// assert_eq!(batch.try_record_count("b", 1.0, ()).await, Err(RecordError::SeriesLimitReached { limit: 2 }));
    /// batch.record_count("a", 1.0, [("id", 2)]).await; // to the overflow series of "a"
    /// batch.record_count("a", 1.0, [("id", 1)]).await; // an existing series still aggregates
    /// assert_eq!(batch.flush().await.0.len(), 2);
    /// # }
    /// ```
    pub fn max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series.max(1);
        self
    }

    /// The most series each metric name (of one type) holds (default
    /// [`DEFAULT_SERIES_LIMIT`], 2,000; 0: no limit). Past it, a measurement
    /// for a new attribute set is recorded into the name's *overflow
    /// series*: the same name and type with the single attribute
    /// `otel.metric.overflow = true` ([`OVERFLOW_ATTRIBUTE`]), where counts
    /// and summaries add up and a gauge keeps the last value. Totals stay
    /// exact, one runaway attribute cannot crowd out the batch's other
    /// metrics, and [`MetricBatch::overflows`] names the culprit. A
    /// measurement that goes to the overflow series costs about what one
    /// into an existing series does, and is checked for its value only:
    /// its attributes are not kept.
    ///
    /// ```
    /// use newrelic_telemetry::{Metric, MetricBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().series_limit(3).build();
    /// for user in 0..10 {
    ///     batch.record_count("logins", 1.0, [("user.id", user)]).await;
    /// }
    /// let (metrics, _) = batch.flush().await;
    /// assert_eq!(metrics.len(), 4); // three users, and the overflow series
    /// let overflow = metrics.iter().find_map(|m| match m {
    ///     Metric::Count(c) if c.attributes().contains_key("otel.metric.overflow") => Some(c.value()),
    ///     _ => None,
    /// });
    /// assert_eq!(overflow, Some(7.0)); // the seven other users, counted
    /// # }
    /// ```
    pub fn series_limit(mut self, limit: usize) -> Self {
        self.series_limits.set_default(limit);
        self
    }

    /// The series limit of one metric name, or of every name starting with
    /// a prefix when `pattern` ends in `*` (`"http.server.*"`); 0: no
    /// limit. A name's own limit wins over a prefix's, and a longer prefix
    /// over a shorter one; see [`series_limit`](Self::series_limit).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder()
    ///     .series_limit(2)
    ///     .series_limit_for("http.server.*", 0) // routes are bounded: no limit
    ///     .build();
    /// for route in 0..5 {
    ///     batch.record_count("http.server.requests", 1.0, [("route", route)]).await;
    ///     batch.record_count("jobs", 1.0, [("id", route)]).await;
    /// }
    /// assert_eq!(batch.series_count(), 5 + 2 + 1); // and one overflow series
    /// # }
    /// ```
    pub fn series_limit_for(mut self, pattern: &str, limit: usize) -> Self {
        self.series_limits.set(pattern, limit);
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
    /// work of sending) goes to its name's overflow series (whose room the
    /// name holds from its first series on), or, for a name the batch does
    /// not hold yet, is refused with [`RecordError::MemoryBudgetFull`]
    /// (counted); series already held keep aggregating. The send queue may
    /// fill half of the record limit, and past that the harvester drops its
    /// oldest payload.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().memory_budget(4 * 1024 * 1024).build();
    /// let mut names = 0;
    /// for n in 0..1_000_000 {
    ///     if batch.try_record_count(format!("jobs.{n}"), 1.0, ()).await.is_err() {
    ///         break;
    ///     }
    ///     names += 1;
    /// }
    /// assert!(names > 1_000); // under a kilobyte each, with the room for its overflow series
    /// let err = batch.try_record_count("one.more", 1.0, ()).await.unwrap_err();
    /// assert!(matches!(err, RecordError::MemoryBudgetFull { .. }));
    /// batch.record_count("jobs.0", 1.0, ()).await; // an existing series still counts
    /// // A name the batch holds records a new attribute set into its overflow series.
    /// assert_eq!(batch.try_record_count("jobs.0", 1.0, [("user", 7)]).await, Ok(()));
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
    /// series bound to a live [`CounterHandle`], [`GaugeHandle`] or [`SummaryHandle`]
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

    /// Calls `f` with every recording the batch refuses (after counting
    /// it, and besides the WARN logged once per harvest interval for each
    /// reason): to count refusals in the service's own metrics, or to fail
    /// a test. It runs on the recording task or thread: keep it short.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let over_limit = Arc::new(AtomicUsize::new(0));
    /// let seen = over_limit.clone();
    /// let batch = MetricBatch::builder()
    ///     .max_series(2)
    ///     .on_refused(move |e: &RecordError| {
    ///         if matches!(e, RecordError::SeriesLimitReached { .. }) {
    ///             seen.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .build();
    /// batch.record_count("a", 1.0, ()).await;
    /// batch.record_count("b", 1.0, ()).await; // a second series: refused
    /// assert_eq!(over_limit.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    pub fn on_refused(mut self, f: impl Fn(&RecordError) + Send + Sync + 'static) -> Self {
        self.on_refused = Some(OnRefused::new(f));
        self
    }

    /// The series limits set by [`series_limit`](Self::series_limit) and
    /// [`series_limit_for`](Self::series_limit_for), all at once (from
    /// `Telemetry`'s builder).
    pub(crate) fn series_limits(mut self, limits: SeriesLimits) -> Self {
        self.series_limits = limits;
        self
    }

    /// The callback set by [`on_refused`](Self::on_refused), shared
    /// (`Telemetry` hands one to all its batches).
    pub(crate) fn on_refused_shared(mut self, f: Option<OnRefused>) -> Self {
        self.on_refused = f;
        self
    }

    /// What [`MetricBatch::record_histogram`] records: a distribution (the
    /// default) or a summary.
    ///
    /// ```
    /// use newrelic_telemetry::{Metric, MetricBatch};
    /// use newrelic_telemetry::batch::HistogramKind;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().histogram_kind(HistogramKind::Summary).build();
    /// batch.record_histogram("job.ms", 12.0, ()).await;
    /// assert!(matches!(&batch.flush().await.0[..], [Metric::Summary(_)]));
    /// # }
    /// ```
    pub fn histogram_kind(mut self, kind: HistogramKind) -> Self {
        self.histograms = kind;
        self
    }

    /// A batch of a disabled `Telemetry`: recording by name returns at
    /// once, before any check, and keeps nothing.
    pub(crate) fn off(mut self, off: bool) -> Self {
        self.off = off;
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
        let seeds = Seeds::new(&hasher);
        let overflow_set = Arc::new(Attributes::new().with(OVERFLOW_ATTRIBUTE, true));
        // A point per distribution series and interval: room for as many
        // as the batch may hold series, within a budget as large as its own.
        let mut distributions = ItemBatch::builder()
            .capacity(self.max_series.max(crate::batch::DEFAULT_CAPACITY))
            .memory_budget(self.memory_budget)
            .on_refused_shared(self.on_refused.clone())
            .off(self.off);
        if let Some(attributes) = &self.common_attributes {
            distributions = distributions.common_attributes(attributes.clone());
        }
        MetricBatch {
            shards: (0..self.shards).map(|_| ShardLock::new()).collect(),
            interval: Mutex::new(clock),
            seeds,
            overflow_set_hash: seeds.set(&*overflow_set),
            overflow_set,
            names: std::sync::Mutex::new(Names::new(self.series_limits)),
            hasher,
            common_attributes: self
                .common_attributes
                .map(|a| sanitize_common(a, &METRIC_LIMITS))
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            max_series: self.max_series,
            idle_harvests: self.idle_harvests,
            series: AtomicUsize::new(0),
            reservations: AtomicUsize::new(0),
            shared: Arc::new(Shared {
                budget: MemoryBudget::new(self.memory_budget),
                refusals: Refusals::new(self.on_refused),
                closed: AtomicBool::new(false),
                clock: WallClock::new(&clock),
            }),
            harvest: Notify::new(),
            orphans: std::sync::Mutex::new(Vec::new()),
            histograms: self.histograms,
            distributions: Arc::new(distributions.build()),
            distributions_used: AtomicBool::new(false),
            distributions_made: Notify::new(),
            last_flush: tokio_util::sync::CancellationToken::new(),
            off: self.off,
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
            series_limits: SeriesLimits::default(),
            histograms: HistogramKind::default(),
            on_refused: None,
            off: false,
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

    /// Adds `value` to the count `name` with `attributes`; fire and forget.
    ///
    /// Recording into a series that exists takes no lock and allocates
    /// nothing; a new series is validated, then created under its shard's
    /// lock. A recording the batch refuses (an invalid name, value or
    /// attribute, the series limit, the memory budget, a closed batch) is
    /// counted in [`record_stats`](Self::record_stats), logged at WARN once
    /// per harvest interval for each reason, and handed to the
    /// [`on_refused`](MetricBatchBuilder::on_refused) callback;
    /// [`try_record_count`](Self::try_record_count) returns it instead.
    ///
    /// ```
    /// # use newrelic_telemetry::{Metric, MetricBatch};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("cache.hits", 1.0, [("cache", "users")]).await;
    /// batch.record_count("cache.hits", 2.0, [("cache", "users")]).await;
    /// batch.record_count("cache.hits", f64::NAN, [("cache", "users")]).await; // refused, counted
    /// let (metrics, _) = batch.flush().await;
    /// assert!(matches!(&metrics[..], [Metric::Count(c)] if c.value() == 3.0));
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    pub fn record_count(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = ()> {
        self.recording(name, attributes, Update::Add(value.to_f64()), forget)
    }

    /// [`record_count`](Self::record_count), returning why a recording was
    /// refused (it is counted, logged and handed to the callback all the
    /// same).
    ///
    /// ```
    /// # use newrelic_telemetry::{MetricBatch, RecordError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// assert_eq!(batch.try_record_count("hits", 1.0, ()).await, Ok(()));
    /// assert_eq!(batch.try_record_count("", 1.0, ()).await, Err(RecordError::EmptyName));
    /// # }
    /// ```
    pub fn try_record_count(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        self.recording(name, attributes, Update::Add(value.to_f64()), identity)
    }

    /// Sets the gauge `name` with `attributes` to `value`, timestamped now (to
    /// within a few ms: on Linux, from the coarse monotonic clock); fire and
    /// forget, like [`record_count`](Self::record_count).
    ///
    /// ```
    /// # use newrelic_telemetry::{Metric, MetricBatch};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_gauge("memory.used", 512.0, [("unit", "MiB")]).await;
    /// batch.record_gauge("memory.used", 640.0, [("unit", "MiB")]).await; // the last value wins
    /// let (metrics, _) = batch.flush().await;
    /// assert!(matches!(&metrics[..], [Metric::Gauge(g)] if g.value() == 640.0));
    /// # }
    /// ```
    pub fn record_gauge(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = ()> {
        let update = Update::Set {
            value: value.to_f64(),
            timestamp_ms: None,
        };
        self.recording(name, attributes, update, forget)
    }

    /// [`record_gauge`](Self::record_gauge), returning why a recording was
    /// refused.
    ///
    /// ```
    /// # use newrelic_telemetry::{MetricBatch, RecordError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let refused = batch.try_record_gauge("cpu", f64::NAN, ()).await;
    /// assert_eq!(refused, Err(RecordError::NonFiniteValue { name: "cpu".into() }));
    /// # }
    /// ```
    pub fn try_record_gauge(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        let update = Update::Set {
            value: value.to_f64(),
            timestamp_ms: None,
        };
        self.recording(name, attributes, update, identity)
    }

    /// Adds one observation of `value` to the summary `name` with
    /// `attributes`; fire and forget, like [`record_count`](Self::record_count).
    ///
    /// ```
    /// # use newrelic_telemetry::{Metric, MetricBatch, Summary};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_summary("db.query.ms", 3.0, [("table", "orders")]).await;
    /// batch.record_summary("db.query.ms", 5.0, [("table", "orders")]).await;
    /// let (metrics, _) = batch.flush().await;
    /// assert!(matches!(&metrics[..], [Metric::Summary(s)] if s.summary() == Summary::new(2, 8.0, 3.0, 5.0)));
    /// # }
    /// ```
    pub fn record_summary(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = ()> {
        self.recording(name, attributes, Update::Observe(value.to_f64()), forget)
    }

    /// [`record_summary`](Self::record_summary), returning why a recording
    /// was refused.
    ///
    /// ```
    /// # use newrelic_telemetry::{MetricBatch, RecordError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let refused = batch.try_record_summary("latency", 1.0, [("count", 1)]).await;
    /// assert!(matches!(refused, Err(RecordError::ReservedAttribute { .. })));
    /// # }
    /// ```
    pub fn try_record_summary(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        let update = Update::Observe(value.to_f64());
        self.recording(name, attributes, update, identity)
    }

    /// Aggregates a pre-built metric: a count adds its value, a gauge sets its
    /// value and timestamp, a summary merges its count, sum, min and max. The
    /// metric's own interval is replaced by the batch's. Fire and forget,
    /// like [`record_count`](Self::record_count).
    ///
    /// ```
    /// # use newrelic_telemetry::{CountMetric, Metric, MetricBatch};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_metric(CountMetric::new("jobs", 4.0, Duration::from_secs(1))).await;
    /// batch.record_count("jobs", 1.0, ()).await; // the same series
    /// let (metrics, _) = batch.flush().await;
    /// assert!(matches!(&metrics[..], [Metric::Count(c)] if c.value() == 5.0));
    /// # }
    /// ```
    pub async fn record_metric(&self, metric: impl Into<Metric>) {
        let _ = self.try_record_metric(metric).await;
    }

    /// [`record_metric`](Self::record_metric), returning why a metric was
    /// refused.
    ///
    /// ```
    /// # use newrelic_telemetry::{CountMetric, MetricBatch, RecordError};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let bad = CountMetric::new("jobs", f64::INFINITY, Duration::from_secs(1));
    /// assert!(matches!(batch.try_record_metric(bad).await, Err(RecordError::NonFiniteValue { .. })));
    /// # }
    /// ```
    pub async fn try_record_metric(&self, metric: impl Into<Metric>) -> Result<(), RecordError> {
        if self.off {
            return Ok(());
        }
        let metric = metric.into();
        let update = match &metric {
            Metric::Count(m) => Update::Add(m.value()),
            Metric::Gauge(m) => Update::Set {
                value: m.value(),
                timestamp_ms: m.timestamp_ms(),
            },
            Metric::Summary(m) => Update::Merge(m.summary()),
        };
        check_metric(&metric).map_err(|e| self.shared.refusals.refused(e))?;
        let (name, attributes) = metric.shared_parts();
        self.recording(&**name, &**attributes, update, identity)
            .await
    }

    /// Binds the count `name` with `attributes` once: validated now (and
    /// created if new; past the name's series limit, or with no room left
    /// in the batch, bound to the name's overflow series instead, and for
    /// a name the batch does not hold yet refused), then [`CounterHandle::add`]
    /// records into it synchronously, with no lock and no allocation. The
    /// series stays in the batch while a handle to it lives.
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
    /// batch.record_count("requests", 1.0, [("route", "/orders")]).await;
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
    ) -> Result<CounterHandle, RecordError> {
        let series = self
            .bind(MetricKind::Count, name.as_ref(), &attributes)
            .await?;
        Ok(self.counter_of(series))
    }

    fn counter_of(&self, series: Series) -> CounterHandle {
        match series.cell.count() {
            Some(cell) => CounterHandle::new(series, cell, self.shared.clone()),
            None => unreachable!("series are found by their type"),
        }
    }

    /// Binds the gauge `name` with `attributes` once; then [`GaugeHandle::set`]
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
    ) -> Result<GaugeHandle, RecordError> {
        let series = self
            .bind(MetricKind::Gauge, name.as_ref(), &attributes)
            .await?;
        Ok(self.gauge_of(series))
    }

    fn gauge_of(&self, series: Series) -> GaugeHandle {
        match series.cell.gauge() {
            Some(cell) => GaugeHandle::new(series, cell, self.shared.clone()),
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

    /// Adds one observation of `value` to the distribution `name` with
    /// `attributes`; fire and forget, like [`record_count`](Self::record_count).
    ///
    /// A distribution keeps, besides count, sum, min and max, how many
    /// values fell in each of its exponential buckets, so that
    /// percentiles can be read from it: it is sent to New Relic's OTLP
    /// endpoint, where NRQL's `percentile()` reads it. Each flush puts one
    /// [`DistributionPoint`] per distribution series written to into
    /// [`distributions`](Self::distributions), the batch a second harvester
    /// sends (a [`Telemetry`](crate::Telemetry) starts it when the first
    /// distribution series is made). Values are counted at scale 5 (32
    /// buckets per power of two, each about 2.2% wide) and sent at the
    /// highest scale at which the interval's buckets fit in 160 per side;
    /// a series' buckets take memory from the budget as its values reach
    /// new powers of two.
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// for ms in 1..=100 {
    ///     batch.record_distribution("http.server.duration", ms, [("route", "/")]).await;
    /// }
    /// let (metrics, _) = batch.flush().await;
    /// assert!(metrics.is_empty()); // distributions go apart
    /// let (points, _) = batch.distributions().flush().await;
    /// let latency = points[0].distribution();
    /// assert_eq!((latency.count(), latency.sum()), (100, 5050.0));
    /// let p99 = latency.quantile(0.99).unwrap();
    /// assert!((p99 - 99.0).abs() / 99.0 < 0.03, "{p99}");
    /// # }
    /// ```
    pub fn record_distribution(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = ()> {
        self.recording(name, attributes, Update::Distribute(value.to_f64()), forget)
    }

    /// [`record_distribution`](Self::record_distribution), returning why a
    /// recording was refused.
    ///
    /// ```
    /// # use newrelic_telemetry::{MetricBatch, RecordError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let refused = batch.try_record_distribution("latency", f64::NAN, ()).await;
    /// assert!(matches!(refused, Err(RecordError::NonFiniteValue { .. })));
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    pub fn try_record_distribution(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = Result<(), RecordError>> {
        let update = Update::Distribute(value.to_f64());
        self.recording(name, attributes, update, identity)
    }

    /// Binds the distribution `name` with `attributes` once; then
    /// [`DistributionHandle::record`] records into it synchronously, with
    /// no lock, and with no allocation once the values' powers of two have
    /// been seen. See [`record_distribution`](Self::record_distribution).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let latency = batch.distribution("db.query.duration", [("table", "orders")]).await.unwrap();
    /// latency.record(3.5);
    /// latency.record(250.0);
    /// batch.flush().await;
    /// let (points, _) = batch.distributions().flush().await;
    /// assert_eq!(points[0].distribution().max(), Some(250.0));
    /// # }
    /// ```
    pub async fn distribution(
        &self,
        name: impl AsRef<str>,
        attributes: impl AsAttributes,
    ) -> Result<DistributionHandle, RecordError> {
        let series = self
            .bind(MetricKind::Distribution, name.as_ref(), &attributes)
            .await?;
        Ok(self.distribution_of(series))
    }

    fn distribution_of(&self, series: Series) -> DistributionHandle {
        match series.cell.distribution() {
            Some(cell) => DistributionHandle::new(series, cell, self.shared.clone()),
            None => unreachable!("series are found by their type"),
        }
    }

    /// Records `value` as the batch's [`histogram_kind`](Self::histogram_kind) says:
    /// into the distribution (the default) or the summary `name`. What the
    /// HTTP server middleware records request durations with; fire and
    /// forget, like [`record_count`](Self::record_count).
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_histogram("render.ms", 4.5, [("page", "/")]).await;
    /// batch.flush().await;
    /// assert_eq!(batch.distributions().len().await, 1);
    /// # }
    /// ```
    pub fn record_histogram(
        &self,
        name: impl AsRef<str>,
        value: impl MetricValue,
        attributes: impl AsAttributes,
    ) -> impl Future<Output = ()> {
        let value = value.to_f64();
        let update = match self.histograms {
            HistogramKind::Distribution => Update::Distribute(value),
            HistogramKind::Summary => Update::Observe(value),
        };
        self.recording(name, attributes, update, forget)
    }

    /// What [`record_histogram`](Self::record_histogram) records: see
    /// [`MetricBatchBuilder::histogram_kind`].
    pub fn histogram_kind(&self) -> HistogramKind {
        self.histograms
    }

    /// The batch each flush puts distribution points into, one per
    /// distribution series written to since the last flush: the batch a
    /// harvester with a [`Client<Otlp>`](crate::client::Client) sends from.
    /// It has a memory budget of the same size as this batch's (a budget of
    /// its own), the same common attributes, and asks its harvester for a
    /// harvest as soon as a flush has put points in it.
    ///
    /// ```
    /// # use newrelic_telemetry::MetricBatch;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_distribution("payload.bytes", 512, ()).await;
    /// assert!(batch.distributions().is_empty().await); // until a flush
    /// batch.flush().await;
    /// assert_eq!(batch.distributions().len().await, 1);
    /// # }
    /// ```
    pub fn distributions(&self) -> &Arc<ItemBatch<DistributionPoint>> {
        &self.distributions
    }

    /// Completes once the batch holds (or has held) a distribution series:
    /// when a `Telemetry` starts the distributions' pipeline. One waiter.
    pub(crate) async fn distributions_made(&self) {
        while !self.distributions_used() {
            self.distributions_made.notified().await;
        }
    }

    /// Whether the batch holds (or has held) a distribution series.
    pub(crate) fn distributions_used(&self) -> bool {
        self.distributions_used.load(Ordering::Relaxed)
    }

    /// Completes once a harvest of the closed batch (its harvester's last)
    /// has put its last points into [`distributions`](Self::distributions).
    pub(crate) async fn last_flush_done(&self) {
        self.last_flush.cancelled().await;
    }
}

impl MetricBatch {
    #[inline]
    fn shard(&self, hash: u64) -> &ShardLock {
        // Bits 32.. are used neither for a table's slot at these sizes nor
        // for its tag (the top byte).
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    /// Records into an existing series with no lock, or creates it, and
    /// hands the outcome to `outcome` (`identity` for `try_record_*`,
    /// `forget` for the fire-and-forget calls). The lock-free path is
    /// written out in this one future: wrapping an inner recording future
    /// cost up to a third of a call (moving it and its arguments), and
    /// calling it out as a function about 8% (`BENCHMARKS.md`).
    #[inline]
    async fn recording<R>(
        &self,
        name: impl AsRef<str>,
        attributes: impl AsAttributes,
        update: Update,
        outcome: fn(Result<(), RecordError>) -> R,
    ) -> R {
        if self.off {
            return outcome(Ok(()));
        }
        let (name, attrs) = (name.as_ref(), &attributes);
        if !update.is_valid() {
            return outcome(Err(self.invalid(name, update)));
        }
        let kind = update.kind();
        let hash = self.seeds.series(kind, name, self.seeds.set(attrs));
        let found = self.shard(hash).published.with(|table| {
            let series = table.find(hash, kind, name, attrs)?;
            // The overflow series' set is reserved: a recording that spells
            // it out is refused (or diverted), not written there.
            if Arc::ptr_eq(&series.attributes, &self.overflow_set) {
                return None;
            }
            Some(self.record_found(series, update))
        });
        outcome(match found {
            Some(found) => self.settle(found, name),
            None => match self.divert(kind, name, attrs, update) {
                Some(found) => self.settle(found, name),
                None => self.insert(kind, name, attrs, Some(update)).await.map(drop),
            },
        })
    }

    /// The overflow series of `name` if the table holds it (its set is the
    /// batch's own, compared by address).
    #[inline(always)]
    fn find_overflow<'t>(
        &self,
        table: &'t Table,
        hash: u64,
        kind: MetricKind,
        name: &str,
    ) -> Option<&'t Series> {
        table.find_where(hash, |series| {
            Arc::ptr_eq(&series.attributes, &self.overflow_set)
                && series.kind() == kind
                && str_eq(&series.name, name)
        })
    }

    /// The hash of `name`'s overflow series.
    #[inline(always)]
    fn overflow_hash(&self, kind: MetricKind, name: &str) -> u64 {
        self.seeds.series(kind, name, self.overflow_set_hash)
    }

    /// A recording that found no series of its own, when its name is at
    /// its limit: into the name's overflow series, with no lock. `None`
    /// if the name is not diverting (or has no overflow series yet).
    #[inline(never)]
    fn divert(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
        update: Update,
    ) -> Option<Found> {
        let hash = self.overflow_hash(kind, name);
        let (sampled, found) = self.shard(hash).published.with(|table| {
            let series = self.find_overflow(table, hash, kind, name)?;
            if !series.diverting() {
                return None;
            }
            let found = self.record_found(series, update);
            Some((diverted(series, found), found))
        })?;
        if sampled {
            self.sample(kind, name, attrs);
        }
        Some(found)
    }

    /// Samples a diverted measurement's attributes into its name's census,
    /// if the registry is free (never waits).
    #[cold]
    fn sample(&self, kind: MetricKind, name: &str, attrs: &(impl AsAttributes + ?Sized)) {
        if let Ok(mut names) = self.names.try_lock() {
            names.sample(kind, name, self.seeds, attrs);
        }
    }

    /// A recording's outcome as its caller sees it.
    #[inline(always)]
    fn settle(&self, found: Found, name: &str) -> Result<(), RecordError> {
        match found {
            Found::Recorded => Ok(()),
            Found::Closed => Err(self.shared.refusals.refused(RecordError::Closed)),
            Found::AggregateOverflow => Err(self.aggregate_overflow(name)),
        }
    }

    /// Records into `series`, found with no lock in a table that may be
    /// out of date.
    #[inline(always)]
    fn record_found(&self, series: &Series, update: Update) -> Found {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Found::Closed;
        }
        match series.apply(update, &self.shared) {
            Applied::Done => Found::Recorded,
            Applied::AggregateOverflow => Found::AggregateOverflow,
            Applied::Retired => self.orphan(series),
        }
    }

    /// A recording wrote into a series that a flush let go of meanwhile
    /// (see `Series::retire`): the next flush reads what is left in it.
    /// Synchronous, so that a recording is done once its write is. Once
    /// the batch is closed no flush may come: a write the last flush did
    /// not read is dropped and counted as refused (`Closed`).
    #[cold]
    #[inline(never)]
    fn orphan(&self, series: &Series) -> Found {
        if self.shared.closed.load(Ordering::SeqCst) {
            if series.settle_late_write(&self.shared.budget) {
                return Found::Closed;
            }
            return Found::Recorded;
        }
        self.orphans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(series.clone());
        Found::Recorded
    }

    #[cold]
    fn invalid(&self, name: &str, update: Update) -> RecordError {
        self.shared
            .refusals
            .refused(if matches!(update, Update::Merge(_)) {
                RecordError::InvalidSummary
            } else {
                RecordError::NonFiniteValue {
                    name: name.to_owned(),
                }
            })
    }

    /// Under a shard's lock: the series, if it is there, counted as bound to
    /// one more handle (so that no flush lets go of it), or `Closed`; `None`
    /// if it is not there.
    fn bind_existing(
        &self,
        shard: &Shard,
        hash: u64,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Option<Result<Series, RecordError>> {
        let series = shard
            .table
            .find(hash, kind, name, attrs)
            .filter(|s| !Arc::ptr_eq(&s.attributes, &self.overflow_set))?;
        if self.shared.closed.load(Ordering::Relaxed) {
            return Some(Err(self.shared.refusals.refused(RecordError::Closed)));
        }
        series.bind();
        Some(Ok(series.clone()))
    }

    /// Finds or creates the series a handle binds to, counted as bound.
    async fn bind(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Result<Series, RecordError> {
        let hash = self.seeds.series(kind, name, self.seeds.set(attrs));
        {
            let shard = self.shard(hash).lock.lock().await;
            if let Some(bound) = self.bind_existing(&shard, hash, kind, name, attrs) {
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
    ) -> Result<Option<CounterHandle>, RecordError> {
        let series = self.try_bind(MetricKind::Count, name, attributes)?;
        Ok(series.map(|s| self.counter_of(s)))
    }

    /// [`try_counter`](Self::try_counter) for a gauge.
    #[cfg(feature = "metrics")]
    pub(crate) fn try_gauge(
        &self,
        name: &str,
        attributes: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<GaugeHandle>, RecordError> {
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

    /// [`try_counter`](Self::try_counter) for a distribution.
    #[cfg(feature = "metrics")]
    pub(crate) fn try_distribution(
        &self,
        name: &str,
        attributes: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<DistributionHandle>, RecordError> {
        let series = self.try_bind(MetricKind::Distribution, name, attributes)?;
        Ok(series.map(|s| self.distribution_of(s)))
    }

    /// Takes every shard's lock, as a new series or a flush would for a
    /// moment (tests of what cannot wait for one).
    #[cfg(all(test, feature = "metrics"))]
    pub(crate) fn hold_shards(&self) -> HeldShards<'_> {
        HeldShards(
            self.shards
                .iter()
                .filter_map(|s| s.lock.try_lock().ok())
                .collect(),
        )
    }

    /// [`bind`](Self::bind) if it need not wait: `Ok(None)` if a shard's
    /// lock is taken (a lock is never held across an `.await` that waits on
    /// I/O, but a tokio mutex may be handed to a waiting task that has yet
    /// to run, on this very thread). Polled once, then dropped: a lock it
    /// queued for is given up.
    #[cfg(feature = "metrics")]
    fn try_bind(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Result<Option<Series>, RecordError> {
        use futures::FutureExt;
        self.bind(kind, name, attrs).now_or_never().transpose()
    }

    /// The slow path: validates and canonicalises a series seen for the first
    /// time (outside any lock), then inserts it, or finds it if another task
    /// (or a differently spelled attribute list) got there first. With an
    /// update, applies it and returns `None`; without, returns the series,
    /// counted as bound.
    #[inline(never)]
    async fn insert(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
        update: Option<Update>,
    ) -> Result<Option<Series>, RecordError> {
        let mut new = self.prepare(kind, name, attrs)?;
        for _ in 0..INSERT_ATTEMPTS {
            let shard = self.shard(new.hash);
            new = match self.insert_locked(shard, shard.lock.lock().await, new, update)? {
                Inserted::Done(series) => return Ok(series),
                Inserted::Divert(new) => new,
            };
            let hash = self.overflow_hash(kind, name);
            let shard = self.shard(hash);
            new = match self.divert_locked(shard, shard.lock.lock().await, hash, new, update)? {
                Diverted::Done(series) => return Ok(series),
                Diverted::NameLeft(new) => new,
            };
        }
        Err(self.series_limit_reached())
    }

    /// Validates and canonicalises a new series (no lock held).
    fn prepare<'n>(
        &self,
        kind: MetricKind,
        name: &'n str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Result<NewSeries<'n>, RecordError> {
        let refusals = &self.shared.refusals;
        check_metric_name(name).map_err(|e| refusals.refused(e))?;
        let (canonical, truncations) =
            metric_attributes(name, attrs).map_err(|e| refusals.refused(e))?;
        refusals.truncated(truncations);
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
    /// it; see [`insert`](Self::insert). Past the name's limit, or with no
    /// room in the batch for a known name's new series, hands it back for
    /// its name's overflow series.
    fn insert_locked<'n>(
        &self,
        shard: &ShardLock,
        mut guard: MutexGuard<'_, Shard>,
        new: NewSeries<'n>,
        update: Option<Update>,
    ) -> Result<Inserted<'n>, RecordError> {
        let refusals = &self.shared.refusals;
        let (kind, name, hash) = (new.kind, new.name, new.hash);
        if self.shared.closed.load(Ordering::Relaxed) {
            drop(guard);
            return Err(refusals.refused(RecordError::Closed));
        }
        let locked = &mut *guard;
        match update {
            None => {
                if let Some(bound) = self.bind_existing(locked, hash, kind, name, &new.canonical) {
                    return bound.map(|s| Inserted::Done(Some(s)));
                }
            }
            Some(update) => {
                if let Some(series) = locked.table.find(hash, kind, name, &new.canonical) {
                    // The current table holds no retired series.
                    if matches!(
                        series.apply(update, &self.shared),
                        Applied::AggregateOverflow
                    ) {
                        drop(guard);
                        return Err(self.aggregate_overflow(name));
                    }
                    return Ok(Inserted::Done(None));
                }
            }
        }
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let known = match names.get(kind, name) {
            Some(state) if state.at_limit() => return Ok(Inserted::Divert(new)),
            Some(_) => true,
            None => false,
        };
        // A name's first series reserves the room for its overflow series
        // too: a series, and its bytes.
        let count = if known { 1 } else { 2 };
        let (reserve, entry) = if known {
            (0, 0)
        } else {
            (overflow_series_bytes(kind, name), Names::entry_bytes(name))
        };
        let held = self.series.fetch_add(count, Ordering::Relaxed);
        if held + count > self.max_series || !locked.has_room() {
            let limit = self.max_series;
            return self.no_room(names, guard, count, new, || {
                RecordError::SeriesLimitReached { limit }
            });
        }
        // Room for the series as if everything in it were new; what interning
        // shares is given back right after. A series created by a recording
        // holds something to send: it counts as an item too. A series made
        // for a handle gets a cell of its own (see `series`).
        let placement = match update {
            Some(_) => Placement::Packed,
            None => Placement::Alone,
        };
        let most = new_series_bytes(kind, placement, name, &new.canonical);
        let budget = &self.shared.budget;
        let reserved = match update {
            Some(_) => budget.try_reserve_item(most + reserve + entry),
            None => budget.try_reserve_bytes(most + reserve + entry),
        };
        if !reserved {
            let budget_bytes = budget.limit();
            return self.no_room(names, guard, count, new, || RecordError::MemoryBudgetFull {
                budget_bytes,
            });
        }
        let half = self.max_series.div_ceil(2);
        if held < half && held + count >= half {
            // Half full: ask for an early harvest before anything is refused.
            self.harvest.notify_one();
        }
        let before = locked.held_bytes;
        let interned_name = locked.intern_str(&self.hasher, name);
        let attributes = locked.intern_set(&self.hasher, new.set_hash, new.canonical);
        if !known {
            names.add(kind, name, reserve, budget);
            self.reservations.fetch_add(1, Ordering::Relaxed);
        }
        let near_daily_limit =
            names.series_made(kind, name, hash, self.seeds, &*attributes, budget);
        drop(names);
        let series = Series::new(
            kind,
            interned_name,
            attributes,
            placement,
            &self.shared.budget,
        );
        if kind == MetricKind::Distribution
            && !self.distributions_used.swap(true, Ordering::Relaxed)
        {
            self.distributions_made.notify_one();
        }
        match update {
            Some(update) => {
                // Marked first: its item was counted with its room. A single
                // valid update cannot overflow a new series.
                series.mark_new();
                series.apply(update, &self.shared);
            }
            None => series.bind(),
        }
        let bound = update.is_none().then(|| series.clone());
        locked.held_bytes += shard::series_bytes(kind, placement);
        locked.push(self.seeds, hash, series, &shard.published);
        budget.release_bytes(most.saturating_sub(locked.held_bytes - before));
        drop(guard);
        if let Some(estimate) = near_daily_limit {
            tracing::warn!(
                metric = name,
                distinct_series_today = estimate,
                "a metric name made 80% of the 100,000 series a day past which New Relic stops \
                 aggregating it; lower its series limit or remove the attribute that varies"
            );
        }
        Ok(Inserted::Done(bound))
    }

    /// Records into (or binds) the overflow series of a name with no room
    /// for a new series, under the overflow series' shard's lock (`guard`;
    /// `hash` is its hash): made from the name's reservation if it is not
    /// there. Hands `new` back if the name left the batch meanwhile.
    fn divert_locked<'n>(
        &self,
        shard: &ShardLock,
        mut guard: MutexGuard<'_, Shard>,
        hash: u64,
        new: NewSeries<'n>,
        update: Option<Update>,
    ) -> Result<Diverted<'n>, RecordError> {
        let (kind, name) = (new.kind, new.name);
        if self.shared.closed.load(Ordering::Relaxed) {
            drop(guard);
            return Err(self.shared.refusals.refused(RecordError::Closed));
        }
        let locked = &mut *guard;
        let series = match self.find_overflow(&locked.table, hash, kind, name) {
            Some(series) => series.clone(),
            None => {
                let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
                if names.get(kind, name).is_none() {
                    return Ok(Diverted::NameLeft(new));
                }
                if !locked.has_room() {
                    drop((names, guard));
                    return Err(self.series_limit_reached());
                }
                let before = locked.held_bytes;
                let interned_name = locked.intern_str(&self.hasher, name);
                let series = Series::new(
                    kind,
                    interned_name,
                    self.overflow_set.clone(),
                    Placement::Alone,
                    &self.shared.budget,
                );
                locked.held_bytes += shard::series_bytes(kind, Placement::Alone);
                locked.push(self.seeds, hash, series.clone(), &shard.published);
                let added = locked.held_bytes - before;
                let budget = &self.shared.budget;
                let reserved = names
                    .overflow_made(kind, name, series.clone(), budget)
                    .unwrap_or(0);
                // Its room was counted with the name's first series.
                self.reservations.fetch_sub(1, Ordering::Relaxed);
                // The reservation covers the series and its name.
                budget.release_bytes(reserved.saturating_sub(added));
                budget.add_bytes(added.saturating_sub(reserved));
                series
            }
        };
        let Some(update) = update else {
            // Bound under the lock, where flushes let go of series.
            series.bind();
            series.note_diverted();
            return Ok(Diverted::Done(Some(series)));
        };
        drop(guard);
        let found = self.record_found(&series, update);
        if diverted(&series, found) {
            self.sample(kind, name, &new.canonical);
        }
        self.settle(found, name).map(|()| Diverted::Done(None))
    }

    /// No room in the batch for a new series (its `count` of series is
    /// taken back from `series` here): a known name's goes to its overflow
    /// series, which takes its name's new series until the next harvest;
    /// a new name's is refused with `error`.
    fn no_room<'n>(
        &self,
        mut names: std::sync::MutexGuard<'_, Names>,
        guard: MutexGuard<'_, Shard>,
        count: usize,
        new: NewSeries<'n>,
        error: impl FnOnce() -> RecordError,
    ) -> Result<Inserted<'n>, RecordError> {
        self.series.fetch_sub(count, Ordering::Relaxed);
        let known = names.get(new.kind, new.name).map(NameState::batch_full);
        drop((names, guard));
        self.harvest.notify_one();
        match known {
            Some(()) => Ok(Inserted::Divert(new)),
            None => Err(self.shared.refusals.refused(error())),
        }
    }

    #[cold]
    fn series_limit_reached(&self) -> RecordError {
        self.shared
            .refusals
            .refused(RecordError::SeriesLimitReached {
                limit: self.max_series,
            })
    }

    #[cold]
    fn aggregate_overflow(&self, name: &str) -> RecordError {
        self.shared
            .refusals
            .refused(RecordError::AggregateOverflow {
                name: name.to_owned(),
            })
    }
}

impl MetricBatch {
    /// Refuses recordings from now on ([`RecordError::Closed`], counted; a
    /// handle's writes are ignored and counted); the series held stay for
    /// the next flush. A harvester closes its batch before its final flush,
    /// so nothing recorded later is lost unnoticed (a handle's write, or a
    /// recording by name into a series a handle holds, racing with the
    /// close itself may miss the final flush).
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, RecordError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("kept", 1.0, ()).await;
    /// let late = batch.counter("late", ()).await.unwrap();
    /// batch.close().await;
    /// assert_eq!(batch.try_record_count("late", 1.0, ()).await, Err(RecordError::Closed));
    /// late.add(1.0); // ignored and counted
    /// assert_eq!(batch.record_stats().items_dropped_closed, 2);
    /// assert_eq!(batch.flush().await.0.len(), 1); // what was held stays
    /// # }
    /// ```
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // A new series created under a shard's lock before the flag was set
        // is in place before this returns; one that takes the lock later
        // sees the flag. A recording into an existing series that races
        // with the close either lands before the final flush, or finds the
        // series retired by it and is refused.
        for shard in self.shards.iter() {
            drop(shard.lock.lock().await);
        }
    }

    /// Takes out what was recorded since the last flush and starts a new
    /// interval.
    ///
    /// Returns a metric for every series written to in the interval, and a
    /// common block with the batch's common attributes, `timestamp` = the
    /// start of the interval that ended, and `interval.ms` = its length.
    /// Series that no handle holds leave the batch (a new interval starts
    /// empty, and each name's tally of the day's distinct series goes too);
    /// series bound to a live handle stay, reset, and are sent again only
    /// once written to. Series are read and reset through their atomics
    /// with no lock; a shard's lock is held only to let go of series (a new
    /// table without them, and a last read of each), which blocks only the
    /// creation of new series in that shard, never recording into existing
    /// ones.
    ///
    /// ```
    /// use newrelic_telemetry::{Metric, MetricBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await;
    /// batch.record_count("hits", 2.0, [("page", "/")]).await;
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
        let taken = self.drain(release).await;
        if release == Release::All {
            self.last_flush.cancel();
        }
        taken
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
    /// batch.record_count("hits", 1.0, [("page", "/")]).await;
    /// let one = batch.memory();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await; // same series
    /// assert_eq!(batch.memory(), one);
    /// batch.record_count("hits", 1.0, [("page", "/about")]).await;
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

    /// Whether this is a disabled `Telemetry`'s batch, where recording does
    /// nothing (the middlewares and the `metrics` recorder ask).
    #[cfg_attr(
        not(any(feature = "metrics", feature = "tower", feature = "actix-web")),
        allow(dead_code)
    )]
    pub(crate) fn is_off(&self) -> bool {
        self.off
    }

    /// How many series the batch holds now (written to or bound to a handle,
    /// and not yet let go of).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.record_count("hits", 1.0, [("page", "/")]).await;
    /// batch.record_count("hits", 1.0, [("page", "/")]).await; // same series
    /// batch.record_count("hits", 1.0, [("page", "/about")]).await;
    /// assert_eq!(batch.series_count(), 2);
    /// # }
    /// ```
    pub fn series_count(&self) -> usize {
        let reservations = self.reservations.load(Ordering::Relaxed);
        self.series
            .load(Ordering::Relaxed)
            .saturating_sub(reservations)
    }

    /// What the batch refused or changed since it was created.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.try_record_count("hits", 1.0, [("value", "x")]).await.unwrap_err(); // reserved key
    /// assert_eq!(batch.record_stats().items_dropped_invalid, 1);
    /// # }
    /// ```
    pub fn record_stats(&self) -> RecordStats {
        self.shared.refusals.counts.snapshot()
    }

    /// The metric names that recorded into their overflow series in the
    /// last harvest interval (up to the last harvest or flush), most first:
    /// past their series limit, or diverted by the batch-wide limits; with
    /// the attribute key most likely to blame. A WARN names each one too,
    /// at most once an hour.
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().series_limit(100).build();
    /// for request in 0..1_000 {
    ///     let route = ["/", "/orders"][request % 2];
    ///     batch.record_count("requests", 1.0, [("route", route)]).await;
    ///     batch.record_count("sessions", 1.0, [("session.id", request)]).await;
    /// }
    /// batch.flush().await;
    /// let overflows = batch.overflows();
    /// assert_eq!(overflows.len(), 1); // "requests" stays well under its limit
    /// assert_eq!(overflows[0].name, "sessions");
    /// assert_eq!(overflows[0].overflowed_last_interval, 900);
    /// assert_eq!(overflows[0].top_attribute.as_ref().map(|(k, _)| k.as_str()), Some("session.id"));
    /// assert_eq!(batch.record_stats().measurements_overflowed, 900);
    /// # }
    /// ```
    pub fn overflows(&self) -> Vec<NameOverflow> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflowing()
    }

    /// Changes the series limit of every name no other rule matches (0: no
    /// limit), from now on: series held past a lowered limit stay, and new
    /// ones go to the overflow series; under a raised one, new series are
    /// made again. See [`MetricBatchBuilder::series_limit`].
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::builder().series_limit(1).build();
    /// batch.record_count("jobs", 1.0, [("id", 1)]).await;
    /// batch.record_count("jobs", 1.0, [("id", 2)]).await; // to the overflow series
    /// batch.set_series_limit(10);
    /// batch.record_count("jobs", 1.0, [("id", 3)]).await; // a series of its own
    /// assert_eq!(batch.series_count(), 3);
    /// # }
    /// ```
    pub fn set_series_limit(&self, limit: usize) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_limits(|limits| limits.set_default(limit));
    }

    /// Changes the series limit of a name, or of the names starting with a
    /// prefix when `pattern` ends in `*`, from now on; see
    /// [`MetricBatchBuilder::series_limit_for`] and
    /// [`set_series_limit`](Self::set_series_limit).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// batch.set_series_limit_for("tenant.*", 1);
    /// batch.record_count("tenant.requests", 1.0, [("tenant", "a")]).await;
    /// batch.record_count("tenant.requests", 1.0, [("tenant", "b")]).await;
    /// assert_eq!(batch.record_stats().measurements_overflowed, 0); // counted at the flush
    /// batch.flush().await;
    /// assert_eq!(batch.record_stats().measurements_overflowed, 1);
    /// # }
    /// ```
    pub fn set_series_limit_for(&self, pattern: &str, limit: usize) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_limits(|limits| limits.set(pattern, limit));
    }

    /// The common attributes sent with every flush.
    ///
    /// ```
    /// use newrelic_telemetry::{MetricBatch, attrs};
    ///
    /// let batch = MetricBatch::builder().common_attributes(attrs!["host" => "web-1"]).build();
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
        self.shared.refusals.counts.snapshot()
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
    async fn flushed_count(batch: &MetricBatch) -> Option<f64> {
        match batch.flush().await.0.as_slice() {
            [Metric::Count(count)] => Some(count.value()),
            [] => None,
            other => panic!("at most one count was sent: {other:?}"),
        }
    }

    /// A recording that still holds the table a flush replaced, and writes
    /// into a series that flush let go of after its last read, leaves the
    /// series to the next flush: nothing is lost, nothing is sent twice.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_into_a_series_let_go_of_is_sent_by_the_next_flush() {
        let batch = MetricBatch::builder().shards(1).build();
        batch.record_count("hits", 2.0, [("k", "v")]).await;
        let hash = batch
            .seeds
            .series(MetricKind::Count, "hits", batch.seeds.set(&[("k", "v")]));
        let stale = batch.shards[0].published.current();
        assert_eq!(flushed_count(&batch).await, Some(2.0));
        assert_eq!(batch.series_count(), 0, "the flush let go of it");

        let series = stale
            .find(hash, MetricKind::Count, "hits", &[("k", "v")])
            .expect("the old table still has it");
        assert_eq!(
            batch.record_found(series, Update::Add(5.0)),
            Found::Recorded
        );
        // Meanwhile the series is made anew by name.
        batch.record_count("hits", 1.0, [("k", "v")]).await;
        let (metrics, _) = batch.flush().await;
        let total: f64 = metrics
            .iter()
            .map(|m| match m {
                Metric::Count(c) => c.value(),
                other => panic!("unexpected {other:?}"),
            })
            .sum();
        assert_eq!(total, 6.0);
        assert_eq!(flushed_count(&batch).await, None, "sent once");
        assert_eq!(batch.memory().held_items, 0);
    }

    /// After the last flush of a closed batch no flush comes: a write into a
    /// series that flush let go of, by a recording that still held the old
    /// table, is refused and counted, and nothing stays held.
    #[tokio::test(flavor = "current_thread")]
    async fn a_late_write_after_the_last_flush_is_counted_as_closed() {
        let batch = MetricBatch::builder().shards(1).build();
        batch.record_count("hits", 2.0, [("k", "v")]).await;
        let hash = batch
            .seeds
            .series(MetricKind::Count, "hits", batch.seeds.set(&[("k", "v")]));
        let stale = batch.shards[0].published.current();
        let series = stale
            .find(hash, MetricKind::Count, "hits", &[("k", "v")])
            .expect("the old table has it")
            .clone();
        batch.close().await;
        let last = Batch::take(&batch).await;
        assert_eq!(last.items.len(), 1);
        drop(last);
        // The recording read `closed` before the close, and writes now.
        assert!(matches!(
            series.apply(Update::Add(5.0), &batch.shared),
            Applied::Retired
        ));
        assert_eq!(batch.orphan(&series), Found::Closed);
        assert_eq!(
            batch.memory().held_items,
            1,
            "the metric taken is still held"
        );
        assert!(batch.orphans.lock().unwrap().is_empty());
    }

    /// Tables grow while recordings hold older ones: a series made after
    /// the growth is found under the lock, then with no lock once the
    /// thread's cache catches up.
    #[tokio::test(flavor = "current_thread")]
    async fn series_made_while_the_table_grows_are_all_found() {
        let batch = MetricBatch::builder().shards(1).series_limit(0).build();
        for i in 0..5_000 {
            batch.record_count("grow", 1.0, [("i", i)]).await;
        }
        for i in 0..5_000 {
            batch.record_count("grow", 1.0, [("i", i)]).await;
        }
        assert_eq!(batch.series_count(), 5_000);
        let (metrics, _) = batch.flush().await;
        assert_eq!(metrics.len(), 5_000);
        assert!(
            metrics
                .iter()
                .all(|m| matches!(m, Metric::Count(c) if c.value() == 2.0))
        );
    }
}
