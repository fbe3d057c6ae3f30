//! A series' state, shared between the batch (which finds it by name and
//! attributes under a shard lock, and drains it at every flush) and the
//! handles bound to it (which write to it with no lock at all).
//!
//! Every value lives in atomics, and every writer follows a protocol the
//! flush knows how to read without stopping anyone:
//!
//! * a **count** is one `f64` added to by compare-and-swap; the flush swaps it
//!   for zero, so each addition lands in exactly one flush;
//! * a **gauge** is a value and the time it was set; the time is written last
//!   and doubles as the "set since the last flush" mark, which the flush swaps
//!   for zero;
//! * a **summary** has two slots of count, sum, min and max, and a word whose
//!   top bit names the slot writers use and whose other bits count the
//!   observations started. A flush flips the bit, waits (yielding) until every
//!   observation started in the old slot has finished, then reads and resets
//!   it: each observation lands whole in one flush, so every summary sent is
//!   consistent (count, sum, min and max of the same observations);
//! * a **distribution** is a summary whose slots also count each value in
//!   a bucket of its own (`buckets.rs`), in the same operation: a point
//!   sent holds the buckets of exactly the values its count says.
//!
//! A cell lives in one of two places. A series made by recording by name is
//! *packed*: a plain `Arc` (a million series must stay small), next to
//! whatever the allocator put beside it. A series made for a handle is
//! *alone*: its cell has a 128-byte block to itself, because handles are
//! how hot series are written from many threads, and two cores writing
//! cells that share a cache line (or the pair of lines the hardware
//! prefetches together) pass that line back and forth on every write: two
//! tasks writing series bound alternately (every neighbour in memory the
//! other task's) ran at 0.5x of one task with packed cells and 1.3-1.6x
//! alone (`benches/contention.rs`, "Scaling" in BENCHMARKS.md). A handle
//! bound to a series made by recording by name shares its packed cell: a
//! series' slot in its shard's table never changes.
//!
//! Besides its value, a series has a `touched` flag, set by the first write
//! of an interval, which counts the series as one item held by the pipeline
//! until the flush turns it into a metric; an idle count, which the flush
//! uses to let go of series nobody records into any more; a count of the
//! handles bound to it (a series with one is never let go of); and a
//! retired mark, set when the batch lets go of it (see [`Series::retire`]).

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use super::Update;
use super::buckets::{BucketPages, PageBytes};
use super::key::{Seeds, same_attributes, str_eq};
use crate::attributes::{AsAttributes, Attributes};
use crate::batch::refusal::{Reason, Refusals};
use crate::budget::MemoryBudget;
use crate::distribution::{Distribution, DistributionPoint};
use crate::error::RecordError;
use crate::metric::{CountMetric, GaugeMetric, Metric, MetricKind, Summary, SummaryMetric};
use crate::time::{Clock, CoarseClock, duration_millis};

/// What the batch and its handles share.
pub(super) struct Shared {
    pub(super) budget: Arc<MemoryBudget>,
    pub(super) refusals: Refusals,
    /// Set by `close`; new recordings are refused (and counted) from then on.
    pub(super) closed: AtomicBool,
    pub(super) clock: WallClock,
}

/// The wall clock gauges are stamped with: the batch's first interval clock
/// (tokio's clock since a fixed anchor), shifted by however far each flush
/// found the interval clock to have moved from it (a stepped wall clock).
///
/// Where the platform has a cheap coarse clock ([`CoarseClock`]), the time
/// since the anchor is read from it instead of tokio's clock, and each flush
/// re-anchors the shift to the interval clock it starts: a set is then
/// stamped within a scheduler tick (at most 4 ms) of the set, for a fraction
/// of the cost of a precise clock read. While tokio's clock is paused (tests
/// with `test-util`), gauges read tokio's clock, as the intervals do.
pub(super) struct WallClock {
    base: Clock,
    shift_ms: AtomicI64,
    /// The coarse clock and its reading when `base` was anchored.
    coarse: Option<(CoarseClock, u64)>,
    /// Tokio's clock was found paused: read it rather than the coarse one.
    follow_tokio: AtomicBool,
}

impl WallClock {
    pub(super) fn new(clock: &Clock) -> Self {
        WallClock {
            base: *clock,
            shift_ms: AtomicI64::new(0),
            coarse: CoarseClock::new().map(|c| (c, c.now_ms())),
            follow_tokio: AtomicBool::new(tokio_clock_paused()),
        }
    }

    #[inline]
    pub(super) fn now_ms(&self) -> u64 {
        let since_base = match self.coarse {
            Some((coarse, at)) if !self.follow_tokio.load(Ordering::Relaxed) => self
                .base
                .start_ms()
                .saturating_add(coarse.now_ms().saturating_sub(at)),
            _ => self.base.now_ms(),
        };
        since_base.saturating_add_signed(self.shift_ms.load(Ordering::Relaxed))
    }

    /// Follows `clock` (the interval clock, which follows a stepped wall
    /// clock), just started.
    pub(super) fn align(&self, clock: &Clock) {
        if self.coarse.is_some() && tokio_clock_paused() {
            self.follow_tokio.store(true, Ordering::Relaxed);
        }
        let tiled = match self.coarse {
            // Where the coarse clock says the present is.
            Some((coarse, at)) if !self.follow_tokio.load(Ordering::Relaxed) => self
                .base
                .start_ms()
                .saturating_add(coarse.now_ms().saturating_sub(at)),
            _ => self.base.start_ms().saturating_add(duration_millis(
                clock
                    .instant()
                    .saturating_duration_since(self.base.instant()),
            )),
        };
        let shift = i64::try_from(clock.start_ms()).unwrap_or(i64::MAX)
            - i64::try_from(tiled).unwrap_or(i64::MAX);
        self.shift_ms.store(shift, Ordering::Relaxed);
    }
}

/// Whether tokio's clock is paused (only possible with tokio's `test-util`):
/// two reads in a row return the same instant, which a running clock of
/// nanosecond resolution never does. A clock too coarse to tell reads as
/// paused, which only costs gauges the cheap clock.
fn tokio_clock_paused() -> bool {
    let a = tokio::time::Instant::now();
    a == tokio::time::Instant::now()
}

/// The state of one series, shared with the handles bound to it.
pub(super) struct Cell<S> {
    /// Written to since the last flush (counted as an item of the budget).
    touched: AtomicBool,
    /// Flushes in a row that found nothing new; written by flushes only.
    idle: AtomicU8,
    /// Let go of by the batch: a recording that finds it set after writing
    /// leaves the series to the batch's next flush.
    retired: AtomicBool,
    /// Handles bound to the series; a series with none may be let go of.
    handles: AtomicU32,
    pub(super) state: S,
}

impl<S: Default> Default for Cell<S> {
    fn default() -> Self {
        Cell::new(S::default())
    }
}

impl<S: Default> Default for Alone<S> {
    fn default() -> Self {
        Alone::new(S::default())
    }
}

impl<S> Alone<S> {
    fn new(cell: S) -> Self {
        Alone {
            cell,
            diverting: AtomicBool::new(false),
            diverted: AtomicU64::new(0),
        }
    }
}

impl<S> Cell<S> {
    fn new(state: S) -> Self {
        Cell {
            touched: AtomicBool::new(false),
            idle: AtomicU8::new(0),
            retired: AtomicBool::new(false),
            handles: AtomicU32::new(0),
            state,
        }
    }

    /// Counts one more handle bound to the series.
    pub(super) fn bind(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one handle fewer.
    pub(super) fn unbind(&self) {
        self.handles.fetch_sub(1, Ordering::Release);
    }

    /// Marks the series written to in this interval; the first mark of an
    /// interval counts it as an item the pipeline holds.
    #[inline(always)]
    pub(super) fn touch(&self, budget: &MemoryBudget) {
        if !self.touched.load(Ordering::Relaxed) {
            self.mark(budget);
        }
    }

    #[cold]
    #[inline(never)]
    fn mark(&self, budget: &MemoryBudget) {
        // SeqCst: before a recording's retired check (see `Series::apply`).
        if !self.touched.swap(true, Ordering::SeqCst) {
            budget.add_items(1);
        }
    }

    /// Takes the touched mark (for a flush).
    fn take_touched(&self) -> bool {
        self.touched.load(Ordering::Relaxed) && self.touched.swap(false, Ordering::Acquire)
    }
}

/// A count's running sum.
pub(super) struct CountState(AtomicU64);

impl Default for CountState {
    fn default() -> Self {
        CountState::new()
    }
}

impl CountState {
    fn new() -> Self {
        CountState(AtomicU64::new(0))
    }

    /// Adds `x` (finite), unless the sum would stop being finite: then
    /// nothing changes and `false` is returned.
    #[inline(always)]
    pub(super) fn add(&self, x: f64) -> bool {
        add_f64(&self.0, x)
    }

    /// Takes the sum, leaving zero.
    fn take(&self) -> f64 {
        if self.0.load(Ordering::Relaxed) == 0 {
            return 0.0;
        }
        f64::from_bits(self.0.swap(0, Ordering::Relaxed))
    }
}

/// A gauge's last value and when it was set (0: not set since the last
/// flush), and whether it is *kept*: sent again at every flush once set.
pub(super) struct GaugeState {
    value: AtomicU64,
    timestamp_ms: AtomicU64,
    kept: AtomicU8,
}

/// [`GaugeState::kept`]: sent only when set (what handles and `record_gauge`
/// do, as New Relic's SDKs do).
const SENT_WHEN_SET: u8 = 0;
/// Kept, not set yet.
const KEPT_UNSET: u8 = 1;
/// Kept and set at least once: its last value goes out at every flush.
const KEPT_SET: u8 = 2;

impl Default for GaugeState {
    fn default() -> Self {
        GaugeState::new()
    }
}

impl GaugeState {
    fn new() -> Self {
        GaugeState {
            value: AtomicU64::new(0),
            timestamp_ms: AtomicU64::new(0),
            kept: AtomicU8::new(SENT_WHEN_SET),
        }
    }

    /// Sets the value (finite) at `timestamp_ms`. Two sets racing on one
    /// gauge may leave the value of one with the time of the other.
    #[inline(always)]
    pub(super) fn set(&self, value: f64, timestamp_ms: u64) {
        self.set_ordered(value, timestamp_ms, Ordering::Release);
    }

    /// [`set`](Self::set), with the timestamp (the last write) stored with
    /// `ordering` (`SeqCst` for a recording by name; see `Series::apply`).
    #[inline(always)]
    pub(super) fn set_ordered(&self, value: f64, timestamp_ms: u64, ordering: Ordering) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.timestamp_ms.store(timestamp_ms.max(1), ordering);
    }

    /// From now on, once set, the gauge is sent at every flush (the way a
    /// scraped exporter shows a gauge's current value), not only after a set.
    #[cfg(feature = "metrics")]
    pub(super) fn keep(&self) {
        let _ = self.kept.compare_exchange(
            SENT_WHEN_SET,
            KEPT_UNSET,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The value and its time if set since the last call; else, for a kept
    /// gauge set before, its last value at `flush_ms`.
    fn take(&self, flush_ms: u64) -> Option<(f64, u64)> {
        if self.timestamp_ms.load(Ordering::Relaxed) != 0 {
            let at = self.timestamp_ms.swap(0, Ordering::Acquire);
            if at != 0 {
                if self.kept.load(Ordering::Relaxed) == KEPT_UNSET {
                    self.kept.store(KEPT_SET, Ordering::Relaxed);
                }
                return Some((f64::from_bits(self.value.load(Ordering::Relaxed)), at));
            }
        }
        (self.kept.load(Ordering::Relaxed) == KEPT_SET)
            .then(|| (f64::from_bits(self.value.load(Ordering::Relaxed)), flush_ms))
    }

    #[cfg(test)]
    fn is_clear(&self) -> bool {
        self.timestamp_ms.load(Ordering::Relaxed) == 0
    }
}

/// The bit of [`SummaryState::started`] that names the slot writers use.
const HOT: u64 = 1 << 63;

/// One slot of a summary or a distribution: operations finished in it,
/// and what they recorded (a distribution's buckets are in its pages, which
/// keep a counter per slot).
pub(super) struct Slot {
    done: AtomicU64,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Slot {
    fn new() -> Self {
        Slot {
            done: AtomicU64::new(0),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        }
    }

    /// Adds the observations of `s` (valid), unless the sum would stop
    /// being finite: then nothing is added and `false` is returned.
    #[inline(always)]
    fn add(&self, s: &Summary) -> bool {
        let ok = add_f64(&self.sum, s.sum);
        if ok {
            min_f64(&self.min, s.min);
            max_f64(&self.max, s.max);
            if s.count == 1 {
                self.count.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = self
                    .count
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                        Some(c.saturating_add(s.count))
                    });
            }
        }
        ok
    }

    /// Reads and resets count, sum, min and max (no writer left in the
    /// slot); `None` if nothing was recorded.
    fn take(&self) -> Option<Summary> {
        self.done.store(0, Ordering::Relaxed);
        let count = self.count.swap(0, Ordering::Relaxed);
        let sum = f64::from_bits(self.sum.swap(0, Ordering::Relaxed));
        let min = f64::from_bits(self.min.swap(f64::INFINITY.to_bits(), Ordering::Relaxed));
        let max = f64::from_bits(
            self.max
                .swap(f64::NEG_INFINITY.to_bits(), Ordering::Relaxed),
        );
        (count > 0).then(|| Summary::new(count, sum, min, max))
    }
}

/// Observations in two slots, used in turn between flushes (see the module
/// docs): a summary, and the count, sum, min and max of a distribution.
pub(super) struct Observations {
    /// Top bit: the slot writers use; the rest: operations started, ever.
    started: AtomicU64,
    /// Operations started before the last flip (written by flushes only).
    drained: AtomicU64,
    slots: [Slot; 2],
}

/// A summary: count, sum, min and max in two slots.
pub(super) type SummaryState = Observations;

impl Default for Observations {
    fn default() -> Self {
        Observations {
            started: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            slots: [Slot::new(), Slot::new()],
        }
    }
}

/// A summary slot a flush flipped away from, and how many operations must
/// finish in it before it can be read.
pub(super) struct Flipped {
    slot: usize,
    expected: u64,
}

impl Observations {
    /// One operation on the slot in use: counted in, `write` (given the
    /// slot and its index), counted out.
    #[inline(always)]
    fn write(&self, write: impl FnOnce(&Slot, usize) -> bool) -> bool {
        // SeqCst: before a recording's retired check (see `Series::apply`);
        // the same instruction as Acquire on x86.
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        let index = (n >> 63) as usize;
        let slot = &self.slots[index];
        let ok = write(slot, index);
        // SeqCst: the last write, before a recording's retired check.
        slot.done.fetch_add(1, Ordering::SeqCst);
        ok
    }

    /// Sends new observations to the other slot; `None` if nothing was
    /// recorded since the last flip. Flushes only, one at a time.
    fn flip(&self) -> Option<Flipped> {
        let drained = self.drained.load(Ordering::Relaxed);
        if self.started.load(Ordering::Relaxed) & !HOT == drained {
            return None;
        }
        let before = self.started.fetch_add(HOT, Ordering::AcqRel);
        let started = before & !HOT;
        self.drained.store(started, Ordering::Relaxed);
        Some(Flipped {
            slot: (before >> 63) as usize,
            expected: started - drained,
        })
    }

    /// Whether every operation started in the flipped slot has finished.
    fn ready(&self, f: &Flipped) -> bool {
        self.slots[f.slot].done.load(Ordering::Acquire) >= f.expected
    }
}

impl SummaryState {
    /// Merges `s` (valid) into the slot in use, unless its sum would stop
    /// being finite: then nothing is recorded and `false` is returned.
    #[inline(always)]
    pub(super) fn merge(&self, s: &Summary) -> bool {
        self.write(|slot, _| slot.add(s))
    }

    /// Reads and resets the flipped slot (once [`ready`](Self::ready)).
    fn take(&self, f: &Flipped) -> Option<Summary> {
        self.slots[f.slot].take()
    }
}

/// A distribution: a summary, whose every operation also counts its value
/// in a bucket of the same slot (`buckets.rs`), and the bytes its buckets'
/// pages hold, given back to the budget when the series is dropped.
pub(super) struct DistributionState {
    observations: Observations,
    buckets: BucketPages,
    page_bytes: AtomicUsize,
    budget: Arc<MemoryBudget>,
}

impl DistributionState {
    fn new(budget: Arc<MemoryBudget>) -> Self {
        DistributionState {
            observations: Observations::default(),
            buckets: BucketPages::default(),
            page_bytes: AtomicUsize::new(0),
            budget,
        }
    }

    /// Records `value` (finite) `n` times (`n` > 0), unless the sum would
    /// stop being finite: then nothing is recorded and `false` is returned.
    #[inline(always)]
    pub(super) fn record_n(&self, value: f64, n: u64) -> bool {
        let bytes = self.page_bytes();
        let observed = if n == 1 {
            Summary::from_value(value)
        } else {
            Summary::new(n, value * n as f64, value, value)
        };
        self.observations.write(|slot, index| {
            let ok = slot.add(&observed);
            if ok {
                self.buckets.record(index, value, n, bytes);
            }
            ok
        })
    }

    /// Adds a distribution's values (what the `metrics` facade held before
    /// its series was bound): count, sum, minimum and maximum exactly, and
    /// each bucket's count at the bucket's midpoint, so in the bucket it
    /// came from (or, where the distribution's scale is above the record
    /// scale, in the one that holds it). `false` (nothing recorded) if the
    /// sum would stop being finite.
    #[cfg(feature = "metrics")]
    pub(super) fn merge(&self, d: &Distribution) -> bool {
        let (Some(min), Some(max)) = (d.min(), d.max()) else {
            return true;
        };
        let bytes = self.page_bytes();
        self.observations.write(|slot, in_slot| {
            let ok = slot.add(&Summary::new(d.count(), d.sum(), min, max));
            if ok {
                if d.zero_count() > 0 {
                    self.buckets.record(in_slot, 0.0, d.zero_count(), bytes);
                }
                for (sign, side) in [(1.0, d.positive()), (-1.0, d.negative())] {
                    for (index, n) in side.iter().filter(|&(_, n)| n > 0) {
                        let (lower, upper) = d.bucket_bounds(index);
                        let mid = (lower * upper).sqrt().clamp(lower, upper.min(f64::MAX));
                        self.buckets.record(in_slot, sign * mid, n, bytes);
                    }
                }
            }
            ok
        })
    }

    /// Where new pages' bytes are counted.
    #[inline(always)]
    fn page_bytes(&self) -> PageBytes<'_> {
        PageBytes {
            budget: &self.budget,
            held: &self.page_bytes,
        }
    }

    /// Reads and resets the flipped slot (once ready).
    fn take(&self, f: &Flipped) -> Option<Distribution> {
        let slot = &self.observations.slots[f.slot];
        let s = slot.take()?;
        self.buckets.take(f.slot, s.count, s.sum, s.min, s.max)
    }
}

impl Drop for DistributionState {
    fn drop(&mut self) {
        self.budget.release_bytes(*self.page_bytes.get_mut());
    }
}

/// Adds `x` to the `f64` in `cell` unless the sum would not be finite.
#[inline(always)]
fn add_f64(cell: &AtomicU64, x: f64) -> bool {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = f64::from_bits(current) + x;
        if !next.is_finite() {
            return false;
        }
        // SeqCst: the write a recording's retired check is ordered after
        // (see `Series::apply`); the same instruction as Relaxed on x86.
        match cell.compare_exchange_weak(
            current,
            next.to_bits(),
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

#[inline(always)]
fn min_f64(cell: &AtomicU64, x: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    while x < f64::from_bits(current) {
        match cell.compare_exchange_weak(current, x.to_bits(), Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return,
            Err(now) => current = now,
        }
    }
}

#[inline(always)]
fn max_f64(cell: &AtomicU64, x: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    while x > f64::from_bits(current) {
        match cell.compare_exchange_weak(current, x.to_bits(), Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return,
            Err(now) => current = now,
        }
    }
}

/// A series: its identity (kept beside the reference to its state, so that
/// finding a series reads its name and set without a hop through the state)
/// and its state, of one of the three types.
#[derive(Clone)]
pub(super) struct Series {
    pub(super) name: Arc<str>,
    pub(super) attributes: Arc<Attributes>,
    pub(super) cell: CellRef,
}

/// A series' state, of one of the three types, packed or alone, under one
/// tag: a type tag around a [`CellArc`] would make every series 8 bytes
/// larger.
#[derive(Clone)]
pub(super) enum CellRef {
    PackedCount(Arc<Cell<CountState>>),
    PackedGauge(Arc<Cell<GaugeState>>),
    PackedSummary(Arc<Cell<SummaryState>>),
    PackedDistribution(Arc<Cell<DistributionState>>),
    AloneCount(Arc<Alone<Cell<CountState>>>),
    AloneGauge(Arc<Alone<Cell<GaugeState>>>),
    AloneSummary(Arc<Alone<Cell<SummaryState>>>),
    AloneDistribution(Arc<Alone<Cell<DistributionState>>>),
}

/// A series' state, borrowed, whichever its placement.
pub(super) enum CellView<'a> {
    Count(&'a Cell<CountState>),
    Gauge(&'a Cell<GaugeState>),
    Summary(&'a Cell<SummaryState>),
    Distribution(&'a Cell<DistributionState>),
}

impl CellRef {
    fn new(kind: MetricKind, placement: Placement, budget: &Arc<MemoryBudget>) -> Self {
        let distribution = || Cell::new(DistributionState::new(budget.clone()));
        match (kind, placement) {
            (MetricKind::Count, Placement::Packed) => CellRef::PackedCount(Arc::default()),
            (MetricKind::Gauge, Placement::Packed) => CellRef::PackedGauge(Arc::default()),
            (MetricKind::Summary, Placement::Packed) => CellRef::PackedSummary(Arc::default()),
            (MetricKind::Count, Placement::Alone) => CellRef::AloneCount(Arc::default()),
            (MetricKind::Gauge, Placement::Alone) => CellRef::AloneGauge(Arc::default()),
            (MetricKind::Summary, Placement::Alone) => CellRef::AloneSummary(Arc::default()),
            (MetricKind::Distribution, Placement::Packed) => {
                CellRef::PackedDistribution(Arc::new(distribution()))
            }
            (MetricKind::Distribution, Placement::Alone) => {
                CellRef::AloneDistribution(Arc::new(Alone::new(distribution())))
            }
        }
    }

    #[inline(always)]
    pub(super) fn view(&self) -> CellView<'_> {
        match self {
            CellRef::PackedCount(c) => CellView::Count(c),
            CellRef::PackedGauge(c) => CellView::Gauge(c),
            CellRef::PackedSummary(c) => CellView::Summary(c),
            CellRef::PackedDistribution(c) => CellView::Distribution(c),
            CellRef::AloneCount(c) => CellView::Count(&c.cell),
            CellRef::AloneGauge(c) => CellView::Gauge(&c.cell),
            CellRef::AloneSummary(c) => CellView::Summary(&c.cell),
            CellRef::AloneDistribution(c) => CellView::Distribution(&c.cell),
        }
    }

    /// The overflow marks of an alone cell.
    #[inline(always)]
    fn marks(&self) -> Option<(&AtomicBool, &AtomicU64)> {
        match self {
            CellRef::AloneCount(c) => Some((&c.diverting, &c.diverted)),
            CellRef::AloneGauge(c) => Some((&c.diverting, &c.diverted)),
            CellRef::AloneSummary(c) => Some((&c.diverting, &c.diverted)),
            CellRef::AloneDistribution(c) => Some((&c.diverting, &c.diverted)),
            _ => None,
        }
    }

    fn placement(&self) -> Placement {
        match self {
            CellRef::PackedCount(_)
            | CellRef::PackedGauge(_)
            | CellRef::PackedSummary(_)
            | CellRef::PackedDistribution(_) => Placement::Packed,
            _ => Placement::Alone,
        }
    }

    #[cfg(test)]
    fn address(&self) -> *const u8 {
        match self.view() {
            CellView::Count(c) => std::ptr::from_ref(c).cast(),
            CellView::Gauge(c) => std::ptr::from_ref(c).cast(),
            CellView::Summary(c) => std::ptr::from_ref(c).cast(),
            CellView::Distribution(c) => std::ptr::from_ref(c).cast(),
        }
    }

    /// The count cell, for a handle.
    pub(super) fn count(&self) -> Option<CellArc<CountState>> {
        match self {
            CellRef::PackedCount(a) => Some(CellArc::Packed(a.clone())),
            CellRef::AloneCount(a) => Some(CellArc::Alone(a.clone())),
            _ => None,
        }
    }

    /// The gauge cell, for a handle.
    pub(super) fn gauge(&self) -> Option<CellArc<GaugeState>> {
        match self {
            CellRef::PackedGauge(a) => Some(CellArc::Packed(a.clone())),
            CellRef::AloneGauge(a) => Some(CellArc::Alone(a.clone())),
            _ => None,
        }
    }

    /// The summary cell, for a handle.
    pub(super) fn summary(&self) -> Option<CellArc<SummaryState>> {
        match self {
            CellRef::PackedSummary(a) => Some(CellArc::Packed(a.clone())),
            CellRef::AloneSummary(a) => Some(CellArc::Alone(a.clone())),
            _ => None,
        }
    }

    /// The distribution cell, for a handle.
    pub(super) fn distribution(&self) -> Option<CellArc<DistributionState>> {
        match self {
            CellRef::PackedDistribution(a) => Some(CellArc::Packed(a.clone())),
            CellRef::AloneDistribution(a) => Some(CellArc::Alone(a.clone())),
            _ => None,
        }
    }
}

/// Where a series' cell lives (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// A plain `Arc`: the series made by recording by name.
    Packed,
    /// A 128-byte block of its own: the series bound to handles.
    Alone,
}

/// The bytes that the adjacent-line prefetcher of x86 processors moves
/// together: two cells in one such block behave as if they shared a line.
const BLOCK: usize = 128;

/// A value in a [`BLOCK`] of its own (the `Arc` around it puts its counts
/// in the block before); in the block's padding, what an overflow series
/// (`cardinality`), always alone, keeps besides its cell.
#[repr(align(128))]
pub(super) struct Alone<T> {
    cell: T,
    /// Its name is at its limit: new series of the name record here.
    diverting: AtomicBool,
    /// Measurements recorded by name that came here for want of a series
    /// of their own, since the last flush.
    diverted: AtomicU64,
}

const _: () = assert!(std::mem::align_of::<Alone<()>>() == BLOCK);
const _: () = assert!(std::mem::size_of::<Alone<Cell<SummaryState>>>() == BLOCK);

/// A shared reference to a cell, packed or alone.
pub(super) enum CellArc<S> {
    Packed(Arc<Cell<S>>),
    Alone(Arc<Alone<Cell<S>>>),
}

impl<S> Clone for CellArc<S> {
    fn clone(&self) -> Self {
        match self {
            CellArc::Packed(a) => CellArc::Packed(a.clone()),
            CellArc::Alone(a) => CellArc::Alone(a.clone()),
        }
    }
}

impl<S> Deref for CellArc<S> {
    type Target = Cell<S>;

    #[inline(always)]
    fn deref(&self) -> &Cell<S> {
        match self {
            CellArc::Packed(a) => a,
            CellArc::Alone(a) => &a.cell,
        }
    }
}

impl<S> CellArc<S> {
    /// What the allocation holds: the `Arc`'s two counts and the cell,
    /// padded to the cell's alignment.
    const fn bytes(placement: Placement) -> usize {
        let counts = 2 * std::mem::size_of::<usize>();
        match placement {
            Placement::Packed => counts + std::mem::size_of::<Cell<S>>(),
            Placement::Alone => {
                counts.next_multiple_of(BLOCK) + std::mem::size_of::<Alone<Cell<S>>>()
            }
        }
    }
}

/// Where a flush puts what it reads.
pub(super) struct Harvest {
    pub(super) metrics: Vec<Metric>,
    pub(super) distributions: Vec<DistributionPoint>,
    pub(super) items: ItemDelta,
    /// When the interval read started.
    pub(super) interval_start_ms: u64,
    /// When it ended: when a kept gauge not set since is sent.
    pub(super) flush_ms: u64,
}

/// What draining a series found.
pub(super) enum Drained {
    /// Done: whether it produced a metric.
    Done(bool),
    /// A summary whose old slot still has observations finishing.
    Pending(Flipped),
}

macro_rules! each {
    ($series:expr, $cell:ident => $body:expr) => {
        match $series.cell.view() {
            CellView::Count($cell) => $body,
            CellView::Gauge($cell) => $body,
            CellView::Summary($cell) => $body,
            CellView::Distribution($cell) => $body,
        }
    };
}

impl Series {
    pub(super) fn new(
        kind: MetricKind,
        name: Arc<str>,
        attributes: Arc<Attributes>,
        placement: Placement,
        budget: &Arc<MemoryBudget>,
    ) -> Series {
        Series {
            name,
            attributes,
            cell: CellRef::new(kind, placement, budget),
        }
    }

    /// What a series' cell holds: its allocation with the `Arc`'s two
    /// counts.
    pub(super) const fn cell_bytes(kind: MetricKind, placement: Placement) -> usize {
        match kind {
            MetricKind::Count => CellArc::<CountState>::bytes(placement),
            MetricKind::Gauge => CellArc::<GaugeState>::bytes(placement),
            MetricKind::Summary => CellArc::<SummaryState>::bytes(placement),
            MetricKind::Distribution => CellArc::<DistributionState>::bytes(placement),
        }
    }

    pub(super) fn placement(&self) -> Placement {
        self.cell.placement()
    }

    pub(super) fn kind(&self) -> MetricKind {
        match self.cell.view() {
            CellView::Count(_) => MetricKind::Count,
            CellView::Gauge(_) => MetricKind::Gauge,
            CellView::Summary(_) => MetricKind::Summary,
            CellView::Distribution(_) => MetricKind::Distribution,
        }
    }

    /// Whether this overflow series takes its name's new series now.
    #[inline(always)]
    pub(super) fn diverting(&self) -> bool {
        self.cell
            .marks()
            .is_some_and(|(on, _)| on.load(Ordering::Relaxed))
    }

    /// Marks this overflow series as taking its name's new series or not.
    pub(super) fn set_diverting(&self, on: bool) {
        if let Some((diverting, _)) = self.cell.marks() {
            diverting.store(on, Ordering::Relaxed);
        }
    }

    /// Counts a measurement recorded here (or a handle bound here) for want
    /// of a series of its own; returns how many came before it since the
    /// last flush.
    #[inline(always)]
    pub(super) fn note_diverted(&self) -> u64 {
        self.cell
            .marks()
            .map_or(0, |(_, n)| n.fetch_add(1, Ordering::Relaxed))
    }

    /// Takes the count of diverted measurements, leaving zero.
    pub(super) fn take_diverted(&self) -> u64 {
        self.cell.marks().map_or(0, |(_, n)| {
            if n.load(Ordering::Relaxed) == 0 {
                0
            } else {
                n.swap(0, Ordering::Relaxed)
            }
        })
    }

    /// The series' hash (as computed from a caller's pairs when recording).
    pub(super) fn hash(&self, seeds: Seeds) -> u64 {
        seeds.series(self.kind(), &self.name, seeds.set(&*self.attributes))
    }

    /// Whether this is the series `kind`, `name`, `attrs` (in any order).
    #[inline(always)]
    pub(super) fn is(
        &self,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> bool {
        self.kind() == kind && str_eq(&self.name, name) && same_attributes(&self.attributes, attrs)
    }

    /// Applies a (valid) update of this series' type, as a recording by
    /// name does: the write is ordered before the check of the retired mark
    /// that follows it (see [`retire`](Self::retire)).
    #[inline(always)]
    pub(super) fn apply(&self, update: Update, shared: &Shared) -> Applied {
        let ok = match (self.cell.view(), update) {
            (CellView::Count(c), Update::Add(x)) => c.state.add(x),
            (
                CellView::Gauge(c),
                Update::Set {
                    value,
                    timestamp_ms,
                },
            ) => {
                c.state.set_ordered(
                    value,
                    timestamp_ms.unwrap_or_else(|| shared.clock.now_ms()),
                    Ordering::SeqCst,
                );
                true
            }
            (CellView::Summary(c), Update::Observe(x)) => c.state.merge(&Summary::from_value(x)),
            (CellView::Summary(c), Update::Merge(s)) => c.state.merge(&s),
            (CellView::Distribution(c), Update::Distribute(x)) => c.state.record_n(x, 1),
            _ => false,
        };
        if !ok {
            return Applied::AggregateOverflow;
        }
        each!(self, c => {
            c.touch(&shared.budget);
            if c.retired.load(Ordering::SeqCst) {
                return Applied::Retired;
            }
        });
        Applied::Done
    }

    /// Marks the series let go of. The batch retires a series after
    /// publishing a table without it and before its last drain, with a
    /// `SeqCst` fence between the two (see [`retire_all`]): a recording
    /// whose check ([`apply`](Self::apply)) finds no mark wrote before that
    /// drain, which takes the write; one that finds the mark leaves the series
    /// to the batch's orphans, which the next flush reads.
    fn retire(&self) {
        each!(self, c => c.retired.store(true, Ordering::SeqCst));
    }

    /// After the batch closed: takes the touched mark of a retired series
    /// that a late recording wrote into; `true` if that write was not read
    /// by the last flush (its item is then resolved here, as dropped).
    pub(super) fn settle_late_write(&self, budget: &MemoryBudget) -> bool {
        let late = each!(self, c => c.take_touched());
        if late {
            budget.resolve_items(1);
        }
        late
    }

    /// Handles bound to the series now.
    pub(super) fn handles(&self) -> u32 {
        each!(self, c => c.handles.load(Ordering::Acquire))
    }

    /// Counts a new handle bound to the series (under its shard's lock,
    /// so that the series cannot be let go of meanwhile).
    pub(super) fn bind(&self) {
        each!(self, c => c.bind());
    }

    /// Takes what was recorded since the last drain into `out`, keeping the
    /// budget's item count true: a series written to counts as one item
    /// until here, where it becomes a metric (or, if a racing write left
    /// nothing to send, stops counting). A kept gauge not set since goes
    /// out with its last value at `out.flush_ms`. A distribution leaves the
    /// metric pipeline here: its point is counted by the distributions'
    /// batch it goes to.
    pub(super) fn drain(&self, out: &mut Harvest) -> Drained {
        match self.cell.view() {
            CellView::Count(c) => {
                let touched = c.take_touched();
                let value = c.state.take();
                // A sum of exactly +0.0 that nobody touched is nothing new.
                let emit = touched || value.to_bits() != 0;
                if emit {
                    out.metrics.push(
                        CountMetric::in_common_interval(
                            self.name.clone(),
                            self.attributes.clone(),
                            value,
                        )
                        .into(),
                    );
                }
                out.items.settle(touched, emit);
                Drained::Done(emit)
            }
            CellView::Gauge(c) => {
                let touched = c.take_touched();
                let taken = c.state.take(out.flush_ms);
                if let Some((value, at)) = taken {
                    out.metrics.push(
                        GaugeMetric::at(self.name.clone(), self.attributes.clone(), value, at)
                            .into(),
                    );
                }
                out.items.settle(touched, taken.is_some());
                Drained::Done(taken.is_some())
            }
            CellView::Summary(c) => self.drain_observations(c, c.state.flip(), out),
            CellView::Distribution(c) => {
                self.drain_observations(c, c.state.observations.flip(), out)
            }
        }
    }

    fn drain_observations<S>(
        &self,
        cell: &Cell<S>,
        flipped: Option<Flipped>,
        out: &mut Harvest,
    ) -> Drained {
        let Some(flipped) = flipped else {
            let touched = cell.take_touched();
            out.items.settle(touched, false);
            return Drained::Done(false);
        };
        for _ in 0..64 {
            if self.ready(&flipped) {
                return Drained::Done(self.finish(&flipped, out));
            }
            std::hint::spin_loop();
        }
        Drained::Pending(flipped)
    }

    /// Whether a pending summary or distribution slot can be read now.
    pub(super) fn ready(&self, flipped: &Flipped) -> bool {
        match self.cell.view() {
            CellView::Summary(c) => c.state.ready(flipped),
            CellView::Distribution(c) => c.state.observations.ready(flipped),
            _ => true,
        }
    }

    /// Reads a flipped summary or distribution slot that is ready.
    pub(super) fn finish(&self, flipped: &Flipped, out: &mut Harvest) -> bool {
        match self.cell.view() {
            CellView::Summary(c) => {
                let touched = c.take_touched();
                let taken = c.state.take(flipped);
                if let Some(s) = taken {
                    out.metrics.push(
                        SummaryMetric::in_common_interval(
                            self.name.clone(),
                            self.attributes.clone(),
                            s,
                        )
                        .into(),
                    );
                }
                out.items.settle(touched, taken.is_some());
                taken.is_some()
            }
            CellView::Distribution(c) => {
                let touched = c.take_touched();
                let taken = c.state.take(flipped);
                let emitted = taken.is_some();
                if let Some(distribution) = taken {
                    out.distributions.push(DistributionPoint::in_interval(
                        self.name.clone(),
                        self.attributes.clone(),
                        out.interval_start_ms,
                        out.flush_ms,
                        distribution,
                    ));
                }
                // The point is counted by the batch it goes to.
                out.items.settle(touched, false);
                emitted
            }
            _ => false,
        }
    }

    /// Counts a flush that found nothing new (or resets the count); returns
    /// how many flushes in a row found nothing.
    pub(super) fn note_idle(&self, emitted: bool) -> u8 {
        each!(self, c => {
            let idle = if emitted { 0 } else { c.idle.load(Ordering::Relaxed).saturating_add(1) };
            c.idle.store(idle, Ordering::Relaxed);
            idle
        })
    }

    /// Flushes in a row that found nothing new in the series.
    pub(super) fn idle(&self) -> u8 {
        each!(self, c => c.idle.load(Ordering::Relaxed))
    }

    /// Marks a new series written to; its item was counted with its room.
    pub(super) fn mark_new(&self) {
        each!(self, c => c.touched.store(true, Ordering::Relaxed));
    }
}

/// What a recording by name did to the series it found.
pub(super) enum Applied {
    /// Recorded.
    Done,
    /// Nothing recorded: the aggregate would stop being finite.
    AggregateOverflow,
    /// Recorded into a series the batch let go of meanwhile: the next flush
    /// must read it (the batch's orphans).
    Retired,
}

/// Marks `series` let go of, then fences, so that the drains that follow
/// see every write whose writer found no mark (see [`Series::retire`]).
pub(super) fn retire_all(series: &[Series]) {
    for s in series {
        s.retire();
    }
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// Items a drain adds to or removes from the budget's count.
#[derive(Default)]
pub(super) struct ItemDelta {
    pub(super) added: usize,
    pub(super) resolved: usize,
}

impl ItemDelta {
    fn settle(&mut self, touched: bool, emitted: bool) {
        match (touched, emitted) {
            (false, true) => self.added += 1,
            (true, false) => self.resolved += 1,
            _ => {}
        }
    }

    pub(super) fn apply(self, budget: &MemoryBudget) {
        budget.add_items(self.added);
        budget.resolve_items(self.resolved);
    }
}

impl Shared {
    /// Counts a handle's value refused as not finite (the error is built
    /// only to be logged or handed to a callback).
    #[cold]
    pub(super) fn refuse_value(&self, name: &str) {
        self.refusals
            .refused_quietly(Reason::Invalid, || RecordError::NonFiniteValue {
                name: name.to_owned(),
            });
    }

    /// Counts a handle's value refused because the aggregate would stop
    /// being finite.
    #[cold]
    pub(super) fn refuse_overflow(&self, name: &str) {
        self.refusals
            .refused_quietly(Reason::Invalid, || RecordError::AggregateOverflow {
                name: name.to_owned(),
            });
    }

    /// Counts a handle's invalid summary (the `metrics` facade's).
    #[cfg(feature = "metrics")]
    #[cold]
    pub(super) fn refuse_summary(&self) {
        self.refusals
            .refused_quietly(Reason::Invalid, || RecordError::InvalidSummary);
    }

    /// Counts a handle's write refused because the batch is closed.
    #[cold]
    pub(super) fn refuse_closed(&self) {
        self.refusals
            .refused_quietly(Reason::Closed, || RecordError::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(kind: MetricKind, placement: Placement) -> Series {
        Series::new(
            kind,
            Arc::from("m"),
            Arc::new(Attributes::default()),
            placement,
            &MemoryBudget::new(0),
        )
    }

    #[test]
    fn a_cell_alone_has_its_block_to_itself() {
        for kind in [MetricKind::Count, MetricKind::Gauge, MetricKind::Summary] {
            for _ in 0..16 {
                let alone = series(kind, Placement::Alone);
                assert_eq!(alone.placement(), Placement::Alone);
                assert_eq!(alone.cell.address() as usize % BLOCK, 0);
            }
        }
        // The largest cell fits its block: nothing else can share it.
        assert!(std::mem::size_of::<Alone<Cell<SummaryState>>>() <= BLOCK);
        assert_eq!(CellArc::<CountState>::bytes(Placement::Alone), 2 * BLOCK);
        assert_eq!(
            CellArc::<CountState>::bytes(Placement::Packed),
            2 * std::mem::size_of::<usize>() + std::mem::size_of::<Cell<CountState>>()
        );
        // One tag for type and placement: a series stays five words.
        assert_eq!(
            std::mem::size_of::<Option<Series>>(),
            5 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn a_gauge_is_sent_when_set_and_a_kept_one_at_every_flush_once_set() {
        let plain = GaugeState::new();
        plain.set(3.0, 100);
        assert_eq!(plain.take(200), Some((3.0, 100)));
        assert_eq!(plain.take(300), None, "sent once, when set");

        #[cfg(feature = "metrics")]
        {
            let kept = GaugeState::new();
            kept.keep();
            assert_eq!(kept.take(200), None, "never set: nothing to send");
            kept.set(4.0, 250);
            assert_eq!(kept.take(300), Some((4.0, 250)), "set: its own time");
            assert_eq!(kept.take(400), Some((4.0, 400)), "then at every flush");
            assert_eq!(kept.take(500), Some((4.0, 500)));
            assert!(kept.is_clear(), "nothing pending between flushes");
        }
    }
}
