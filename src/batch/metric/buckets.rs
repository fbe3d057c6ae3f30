//! The buckets of a distribution series: counts written with no lock by
//! any number of threads, in pages allocated as values reach new powers of
//! two, and read into a [`Distribution`] at a flush. Each counter is kept
//! twice, once per slot of the series' two-slot flip (`series.rs`): a page
//! serves both slots, so a power of two is allocated once for the series'
//! life, whichever slot writers use.
//!
//! Values are counted at one fixed scale, [`RECORD_SCALE`] (32 buckets per
//! power of two, each about 2.2% wide, so a percentile read from them is
//! within 1.1%: as fine as an exported histogram of values spanning five
//! powers of two or more can be at 160 buckets). A page holds the 32
//! buckets (in
//! each slot) of one power of two on one side (positive or negative), so a
//! series' memory
//! grows with the range of its values, not with their number: a latency
//! series between 1 ms and 10 s touches 14 pages. A flush turns what a page
//! set holds into an OpenTelemetry exponential histogram: at the record
//! scale if its buckets fit in [`DEFAULT_MAX_SIZE`] per side, else at the
//! highest scale at which they do (each step down merges neighbouring
//! pairs), exactly as a histogram that started at that scale would have
//! counted them.
//!
//! A page set is a directory of [`MAX_PAGES`] places in groups of
//! [`GROUP_LEN`], half for each side. The first value recorded anchors it:
//! a page's place is its power of two's distance from the anchor's (minus
//! [`BELOW_ANCHOR`], modulo 32), on the anchor's side or the other, so a
//! recording goes straight to its page with no search. The first group is
//! inline, and holds the anchor's power of two and its neighbours on that
//! side (the two below it and the five above: a latency series seldom spans
//! more, and reaches its pages with one hop fewer); the other groups and
//! every page are allocated when first needed, their bytes taken from the
//! pipeline's memory budget and given back when the series is dropped. A
//! recording takes one acquire load per level and adds one to a counter:
//! no lock, and no allocation once its page exists. Two threads that make a
//! page at once race for the place through a `OnceLock` whose initialiser
//! only moves the page in (allocated beforehand); the loser frees its page.
//! When no page can be had (another power of two, 32 away on the same side,
//! holds the place: the series' values span more than 2^32; or the budget
//! is full), the value is counted in one of four coarse buckets (per slot)
//! at [`MIN_SCALE`] instead: nothing is lost, and that interval's histogram
//! is sent at the lowest scale (count, sum, minimum and maximum stay exact).

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};

use crate::budget::MemoryBudget;
use crate::distribution::{
    Buckets, DEFAULT_MAX_SIZE, Distribution, DistributionParts, MIN_SCALE, fit_change,
    lower_boundary, map_to_index,
};

/// The scale values are counted at: 2^5 = 32 buckets per power of two.
pub(crate) const RECORD_SCALE: i8 = 5;

/// Buckets in a page: one power of two at [`RECORD_SCALE`].
const PAGE_LEN: usize = 1 << RECORD_SCALE;
/// Pages in a group of the directory.
const GROUP_LEN: usize = 8;
/// The most pages a series holds over its life: 32 powers of two on each
/// side (groups of the directory after the first, inline, are made as
/// needed).
const MAX_PAGES: usize = 64;
/// Places on each side: powers of two this far apart share one.
const PLACES_PER_SIDE: i32 = (MAX_PAGES / 2) as i32;
/// How many powers of two below the anchor's the first group holds.
const BELOW_ANCHOR: i32 = 2;
/// The anchor of a directory nothing was recorded in yet.
const NO_ANCHOR: i32 = i32::MIN;
/// Groups in the directory.
const GROUPS: usize = MAX_PAGES / GROUP_LEN;

/// What a page's counters take from the budget.
const PAGE_BYTES: usize = std::mem::size_of::<[AtomicU64; 2 * PAGE_LEN]>();
/// What a group of the directory takes from the budget.
const GROUP_BYTES: usize = std::mem::size_of::<Group>();

/// The 32 buckets of one power of two, on one side, in each slot: slot
/// `s`'s bucket `i` is `counts[s * PAGE_LEN + i]`.
struct Page {
    /// The power of two (its bucket indices shifted down by the scale),
    /// times two, plus one on the negative side.
    key: i32,
    counts: Box<[AtomicU64; 2 * PAGE_LEN]>,
}

impl Page {
    fn new(key: i32) -> Self {
        Page {
            key,
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Slot `slot`'s buckets.
    fn slot(&self, slot: usize) -> &[AtomicU64] {
        &self.counts[slot * PAGE_LEN..(slot + 1) * PAGE_LEN]
    }
}

type Group = [OnceLock<Page>; GROUP_LEN];

/// Where a page's bytes are counted: the pipeline's budget, and the total
/// a series' pages hold (given back when the series is dropped).
#[derive(Clone, Copy)]
pub(super) struct PageBytes<'a> {
    pub(super) budget: &'a MemoryBudget,
    pub(super) held: &'a AtomicUsize,
}

impl PageBytes<'_> {
    fn try_take(self, bytes: usize) -> bool {
        // Refused before the room the harvester's work needs is taken.
        let ok = self.budget.try_reserve_bookkeeping(bytes);
        if ok {
            self.held.fetch_add(bytes, Ordering::Relaxed);
        }
        ok
    }

    fn give_back(self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.budget.release_bytes(bytes);
    }
}

/// The buckets of a distribution series, in both slots: the zero buckets,
/// the pages, and the coarse buckets.
pub(crate) struct BucketPages {
    zero: [AtomicU64; 2],
    /// The key of the first page wanted ([`NO_ANCHOR`] until then), which
    /// every page's place is reckoned from.
    anchor: AtomicI32,
    /// The first group, inline.
    first: Group,
    more: [OnceLock<Box<Group>>; GROUPS - 1],
    /// Per slot, values no page could take, at [`MIN_SCALE`]: positive
    /// `(0, 1]` and `(1, max]`, then the same magnitudes negative.
    coarse: [[AtomicU64; 4]; 2],
}

impl Default for BucketPages {
    fn default() -> Self {
        BucketPages {
            zero: Default::default(),
            anchor: AtomicI32::new(NO_ANCHOR),
            first: Default::default(),
            more: Default::default(),
            coarse: Default::default(),
        }
    }
}

/// The place in the directory of page `key`, given the anchor's key.
#[inline(always)]
fn place(key: i32, anchor: i32) -> usize {
    let distance = ((key >> 1) - (anchor >> 1) + BELOW_ANCHOR).rem_euclid(PLACES_PER_SIDE);
    let other_side = (key ^ anchor) & 1;
    (distance + other_side * PLACES_PER_SIDE) as usize
}

/// The page key and the bucket within the page of a magnitude.
#[inline(always)]
fn locate(magnitude: f64, negative: bool) -> (i32, usize) {
    let index = record_index(magnitude);
    let key = ((index >> RECORD_SCALE) << 1) | i32::from(negative);
    (key, (index & (PAGE_LEN as i32 - 1)) as usize)
}

/// Where the buckets of one power of two begin, at [`RECORD_SCALE`], as
/// significands in `[1, 2)`: what [`record_index`] compares with, instead
/// of taking a logarithm.
struct Within {
    /// `bounds[j]`: the lower boundary of bucket `j` (`2^(j/32)`, as the
    /// exported buckets' bounds are computed); `bounds[32]` is 2.
    bounds: [f64; PAGE_LEN + 1],
    /// `below[t]`: how many of `bounds[1..32]` lie below `1 + t/128`. A
    /// bucket is wider than 1/128, so at most one more lies below a
    /// significand in `[1 + t/128, 1 + (t + 1)/128)`.
    below: [u8; 128],
}

static WITHIN: LazyLock<Within> = LazyLock::new(|| {
    let bounds: [f64; PAGE_LEN + 1] =
        std::array::from_fn(|j| lower_boundary(i32::from(RECORD_SCALE), j as i64));
    let below = std::array::from_fn(|t| {
        let start = 1.0 + t as f64 / 128.0;
        bounds[1..PAGE_LEN].iter().filter(|&&b| b < start).count() as u8
    });
    Within { bounds, below }
});

/// The bucket index of a finite, positive `magnitude` at [`RECORD_SCALE`]
/// (`map_to_index`'s, read from a table: a bucket's upper boundary is
/// in it, exactly as the exported bounds are computed).
#[inline(always)]
fn record_index(magnitude: f64) -> i32 {
    const SIGNIFICAND_BITS: u32 = 52;
    let bits = magnitude.to_bits();
    let biased = (bits >> SIGNIFICAND_BITS) as i32 & 0x7ff;
    let significand = bits & ((1 << SIGNIFICAND_BITS) - 1);
    if biased == 0 || significand == 0 {
        // Subnormals, and exact powers of two (the top of a bucket).
        return map_to_index(RECORD_SCALE, magnitude);
    }
    let fraction = f64::from_bits(significand | (1023 << SIGNIFICAND_BITS));
    let within = &*WITHIN;
    let below = usize::from(within.below[(significand >> (SIGNIFICAND_BITS - 7)) as usize]);
    let bucket = below + usize::from(within.bounds[below + 1] < fraction);
    ((biased - 1023) << RECORD_SCALE) + bucket as i32
}

/// The bucket index at [`RECORD_SCALE`] of bucket `at` of page `key`, and
/// whether the page is on the negative side.
fn index_of(key: i32, at: usize) -> (i32, bool) {
    (((key >> 1) << RECORD_SCALE) + at as i32, key & 1 == 1)
}

/// The coarse bucket of a magnitude.
fn coarse_slot(magnitude: f64, negative: bool) -> usize {
    usize::from(magnitude > 1.0) + 2 * usize::from(negative)
}

impl BucketPages {
    /// Counts a finite `value` `n` times in its bucket of slot `slot`.
    #[inline(always)]
    pub(super) fn record(&self, slot: usize, value: f64, n: u64, bytes: PageBytes<'_>) {
        if value == 0.0 {
            self.zero[slot].fetch_add(n, Ordering::Relaxed);
            return;
        }
        let negative = value < 0.0;
        let magnitude = value.abs();
        let (key, at) = locate(magnitude, negative);
        match self.page(key, bytes) {
            Some(page) => page.slot(slot)[at].fetch_add(n, Ordering::Relaxed),
            None => {
                self.coarse[slot][coarse_slot(magnitude, negative)].fetch_add(n, Ordering::Relaxed)
            }
        };
    }

    /// Page `key`, made if it is new and there is room.
    #[inline(always)]
    fn page(&self, key: i32, bytes: PageBytes<'_>) -> Option<&Page> {
        let at = place(key, self.anchor(key));
        let group = match at / GROUP_LEN {
            0 => &self.first,
            g => match self.more[g - 1].get() {
                Some(group) => group,
                None => new_group(&self.more[g - 1], bytes)?,
            },
        };
        let slot = &group[at % GROUP_LEN];
        let page = match slot.get() {
            Some(page) => page,
            None => new_page(slot, key, bytes)?,
        };
        // Another power of two, 32 away on this side, may hold the place.
        (page.key == key).then_some(page)
    }

    /// The directory's anchor: `key`, if it is the first.
    #[inline(always)]
    fn anchor(&self, key: i32) -> i32 {
        match self.anchor.load(Ordering::Relaxed) {
            NO_ANCHOR => match self.anchor.compare_exchange(
                NO_ANCHOR,
                key,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => key,
                Err(first) => first,
            },
            anchor => anchor,
        }
    }

    /// Every page made so far.
    fn pages(&self) -> impl Iterator<Item = &Page> {
        let more = self.more.iter().filter_map(OnceLock::get);
        std::iter::once(&self.first)
            .chain(more.map(|group| &**group))
            .flat_map(|group| group.iter().filter_map(OnceLock::get))
    }

    /// Reads and resets slot `slot` (no writer left in it) into a
    /// distribution of `count` values with this `sum`, `min` and `max`.
    pub(super) fn take(
        &self,
        slot: usize,
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
    ) -> Option<Distribution> {
        let zero_count = self.zero[slot].swap(0, Ordering::Relaxed);
        let mut positive: Vec<(i32, u64)> = Vec::new();
        let mut negative: Vec<(i32, u64)> = Vec::new();
        for page in self.pages() {
            for (at, counter) in page.slot(slot).iter().enumerate() {
                if counter.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let n = counter.swap(0, Ordering::Relaxed);
                let (index, is_negative) = index_of(page.key, at);
                if is_negative {
                    negative.push((index, n));
                } else {
                    positive.push((index, n));
                }
            }
        }
        let coarse: Vec<u64> = self.coarse[slot]
            .iter()
            .map(|c| {
                if c.load(Ordering::Relaxed) == 0 {
                    0
                } else {
                    c.swap(0, Ordering::Relaxed)
                }
            })
            .collect();
        let scale =
            if coarse.iter().any(|&n| n > 0) {
                MIN_SCALE
            } else {
                let span = |side: &[(i32, u64)]| {
                    let lo = side.iter().map(|&(i, _)| i).min()?;
                    let hi = side.iter().map(|&(i, _)| i).max()?;
                    Some((lo, hi))
                };
                let down = fit_change(RECORD_SCALE, span(&positive), DEFAULT_MAX_SIZE)
                    .max(fit_change(RECORD_SCALE, span(&negative), DEFAULT_MAX_SIZE));
                RECORD_SCALE - down as i8
            };
        let by = (RECORD_SCALE - scale) as u32;
        // At MIN_SCALE, bucket -1 holds (0, 1] and bucket 0 holds (1, max].
        positive.extend([(-1, coarse[0]), (0, coarse[1])].map(|(i, n)| (i << by, n)));
        negative.extend([(-1, coarse[2]), (0, coarse[3])].map(|(i, n)| (i << by, n)));
        let parts = DistributionParts {
            scale: i32::from(scale),
            zero_count,
            positive: buckets_at(&positive, by)?,
            negative: buckets_at(&negative, by)?,
            count,
            sum,
            min: Some(min),
            max: Some(max),
        };
        // The parts are made to be valid; should they not be, say so.
        match Distribution::from_parts(parts) {
            Ok(taken) => Some(taken),
            Err(e) => {
                debug_assert!(false, "{e}");
                tracing::error!(error = %e, count, "a distribution's buckets could not be read; its values for this interval are lost");
                None
            }
        }
    }
}

/// Bucket counts at [`RECORD_SCALE`] (`(index, count)`, any order, zero
/// counts included) as buckets `by` steps lower.
fn buckets_at(counts: &[(i32, u64)], by: u32) -> Option<Buckets> {
    let mut lowered = counts
        .iter()
        .filter(|&&(_, n)| n > 0)
        .map(|&(i, n)| (i >> by, n));
    let Some((first, n)) = lowered.next() else {
        return Some(Buckets::default());
    };
    let (mut lo, mut hi) = (first, first);
    let mut all = vec![(first, n)];
    for (i, n) in lowered {
        lo = lo.min(i);
        hi = hi.max(i);
        all.push((i, n));
    }
    let mut dense = vec![0u64; usize::try_from(hi - lo).ok()? + 1];
    for (i, n) in all {
        let slot = &mut dense[(i - lo) as usize];
        *slot = slot.saturating_add(n);
    }
    Buckets::new(lo, dense).ok()
}

#[cold]
#[inline(never)]
fn new_group<'g>(slot: &'g OnceLock<Box<Group>>, bytes: PageBytes<'_>) -> Option<&'g Group> {
    if !bytes.try_take(GROUP_BYTES) {
        return None;
    }
    let mut mine = Some(Box::new(Group::default()));
    let group = slot.get_or_init(|| mine.take().unwrap_or_default());
    if mine.is_some() {
        // Another thread's group went in first.
        bytes.give_back(GROUP_BYTES);
    }
    Some(group)
}

#[cold]
#[inline(never)]
fn new_page<'p>(slot: &'p OnceLock<Page>, key: i32, bytes: PageBytes<'_>) -> Option<&'p Page> {
    if !bytes.try_take(PAGE_BYTES) {
        return None;
    }
    let mut mine = Some(Page::new(key));
    let page = slot.get_or_init(|| mine.take().unwrap_or_else(|| Page::new(key)));
    if mine.is_some() {
        // Another thread's page (perhaps of another power of two) went in
        // first.
        bytes.give_back(PAGE_BYTES);
    }
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> (BucketPages, std::sync::Arc<MemoryBudget>, AtomicUsize) {
        (
            BucketPages::default(),
            MemoryBudget::new(1 << 20),
            AtomicUsize::new(0),
        )
    }

    /// What a plain distribution makes of the same values.
    fn expected(values: &[f64]) -> Distribution {
        let mut d = Distribution::new();
        for &v in values {
            d.record(v).unwrap();
        }
        d
    }

    fn taken(p: &BucketPages, values: &[f64]) -> Distribution {
        let sum = values.iter().sum();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        p.take(0, values.len() as u64, sum, min, max).unwrap()
    }

    #[test]
    fn a_wide_range_reads_as_a_distribution_that_started_at_its_scale() {
        let (p, budget, held) = pages();
        let bytes = PageBytes {
            budget: &budget,
            held: &held,
        };
        let values: Vec<f64> = (1..=10_000)
            .map(|i| f64::from(i) * 0.37)
            .chain([0.0, -2.5, -1000.0])
            .collect();
        for &v in &values {
            p.record(0, v, 1, bytes);
        }
        let d = taken(&p, &values);
        let want = expected(&values);
        assert_eq!(d.scale(), want.scale());
        assert_eq!(
            (d.positive(), d.negative()),
            (want.positive(), want.negative())
        );
        assert_eq!(d.zero_count(), 1);
        // Pages: 0.37..3700 spans 14 powers of two, and two negative ones.
        assert_eq!(held.load(Ordering::Relaxed), budget.held_bytes());
        assert!(budget.held_bytes() >= 16 * PAGE_BYTES + GROUP_BYTES);
        // Read and reset: nothing left.
        assert!(p.take(0, 0, 0.0, 0.0, 0.0).unwrap().is_empty());
    }

    #[test]
    fn a_narrow_range_stays_at_the_record_scale() {
        let (p, budget, held) = pages();
        let bytes = PageBytes {
            budget: &budget,
            held: &held,
        };
        let values = [100.0, 101.0, 102.5, 110.0, 127.9];
        for v in values {
            p.record(0, v, 1, bytes);
        }
        let d = taken(&p, &values);
        assert_eq!(d.scale(), RECORD_SCALE);
        let mut want = Distribution::new();
        for v in values {
            want.record(v).unwrap();
        }
        // A plain distribution goes higher; its buckets, lowered to the
        // record scale, are ours.
        assert!(want.scale() > RECORD_SCALE);
        let mut lowered = Distribution::with_max_size(2).unwrap();
        lowered.merge(&d).unwrap();
        let mut want_lowered = Distribution::with_max_size(2).unwrap();
        want_lowered.merge(&want).unwrap();
        assert_eq!(lowered.positive(), want_lowered.positive());
    }

    #[test]
    fn values_whose_place_is_taken_or_past_the_budget_go_to_coarse_buckets() {
        let (p, budget, held) = pages();
        let bytes = PageBytes {
            budget: &budget,
            held: &held,
        };
        // 32 powers of two on each side: every place taken, each by its own
        // power; the first value anchors the directory.
        let values: Vec<f64> = (-2..30)
            .flat_map(|e| [2f64.powi(e) * 1.5, -(2f64.powi(e + 7) * 1.5)])
            .collect();
        for &v in &values {
            p.record(0, v, 1, bytes);
        }
        assert_eq!(
            held.load(Ordering::Relaxed),
            MAX_PAGES * PAGE_BYTES + (GROUPS - 1) * GROUP_BYTES
        );
        let d = taken(&p, &values);
        assert_eq!(
            d.scale(),
            RECORD_SCALE - 3,
            "1,024 buckets a side, fit in 160"
        );
        assert_eq!((d.positive().total(), d.negative().total()), (32, 32));

        // 2^32 times the anchor, and 2^32 below the lowest: their places
        // hold other powers of two.
        let far = [1.5, 1.5 * 2f64.powi(32), 1.5 * 2f64.powi(-34)];
        for &v in &far {
            p.record(0, v, 1, bytes);
        }
        let d = taken(&p, &far);
        assert_eq!((d.scale(), d.count()), (MIN_SCALE, 3));
        assert_eq!(d.positive().total(), 3);
        assert_eq!(
            held.load(Ordering::Relaxed),
            MAX_PAGES * PAGE_BYTES + (GROUPS - 1) * GROUP_BYTES,
            "no page made for them"
        );

        // No budget: coarse buckets from the first value.
        let (p, _, held) = pages();
        let none = MemoryBudget::new(0);
        assert!(none.try_reserve_bytes(none.limit()));
        let bytes = PageBytes {
            budget: &none,
            held: &held,
        };
        p.record(0, 3.0, 1, bytes);
        p.record(0, -0.5, 1, bytes);
        assert_eq!(held.load(Ordering::Relaxed), 0);
        let d = taken(&p, &[3.0, -0.5]);
        assert_eq!((d.scale(), d.count()), (MIN_SCALE, 2));
        assert_eq!((d.positive().total(), d.negative().total()), (1, 1));
    }

    #[test]
    fn the_first_group_holds_the_anchor_and_its_neighbours_on_its_side() {
        let anchor = locate(100.0, false).0;
        let places: Vec<usize> = [25.0, 50.0, 100.0, 200.0, 3_000.0, 6_000.0]
            .iter()
            .map(|&v| place(locate(v, false).0, anchor))
            .collect();
        assert_eq!(places, [0, 1, 2, 3, 7, 8]);
        // Below: wrapped to the top of the side; the other side: its half.
        assert_eq!(place(locate(12.0, false).0, anchor), 31);
        assert_eq!(place(locate(100.0, true).0, anchor), 34);
        // A negative anchor: its side first.
        let negative = locate(0.001, true).0;
        assert_eq!(place(negative, negative), 2);
        assert_eq!(place(locate(0.001, false).0, negative), 34);
        // Every place is in the directory, at the edges of the range too.
        for v in [f64::from_bits(1), f64::MIN_POSITIVE, 1.0, f64::MAX] {
            for side in [false, true] {
                assert!(place(locate(v, side).0, anchor) < MAX_PAGES);
                assert!(place(locate(v, side).0, negative) < MAX_PAGES);
            }
        }
    }

    #[test]
    fn record_index_is_the_bucket_whose_bounds_hold_the_value() {
        let scale = i32::from(RECORD_SCALE);
        let holds = |v: f64, index: i32| {
            lower_boundary(scale, i64::from(index)) < v
                && v <= lower_boundary(scale, i64::from(index) + 1)
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values = vec![f64::from_bits(1), f64::MIN_POSITIVE, 1.0, 3.0, f64::MAX];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Any finite positive value: random bits, exponent and all.
            let v = f64::from_bits(x >> 2);
            if v.is_finite() && v > 0.0 {
                values.push(v);
            }
        }
        // Each bucket boundary and its neighbours, in several powers of two.
        for e in [-1022, -3, 0, 7, 1000] {
            for j in 0..=PAGE_LEN as i64 {
                let b = lower_boundary(scale, (i64::from(e) << scale) + j);
                let bits = b.to_bits();
                values.extend([bits - 1, bits, bits + 1].map(f64::from_bits));
            }
        }
        let mut differ = 0;
        for v in values {
            let index = record_index(v);
            let general = map_to_index(RECORD_SCALE, v);
            if (f64::MIN_POSITIVE..f64::MAX).contains(&v) {
                assert!(holds(v, index), "{v:e}: {index}");
            }
            // The logarithm rounds near a boundary: one bucket at most.
            assert!((index - general).abs() <= 1, "{v:e}: {index} vs {general}");
            differ += usize::from(index != general);
        }
        assert!(differ < 100, "{differ}");
    }

    #[test]
    fn page_keys_round_trip_at_the_edges() {
        for v in [
            f64::from_bits(1),
            f64::MIN_POSITIVE,
            0.5,
            1.0,
            1.0 + f64::EPSILON,
            2.0,
            3.0,
            f64::MAX,
        ] {
            for negative in [false, true] {
                let (key, at) = locate(v, negative);
                assert_eq!(
                    index_of(key, at),
                    (map_to_index(RECORD_SCALE, v), negative),
                    "{v}"
                );
            }
        }
    }

    #[test]
    fn concurrent_writers_race_for_pages_and_lose_nothing() {
        let (p, budget, held) = pages();
        let values: Vec<f64> = (0..8).map(|t| 2f64.powi(t)).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (p, budget, held, values) = (&p, &budget, &held, &values);
                s.spawn(move || {
                    let bytes = PageBytes { budget, held };
                    for i in 0..2_000 {
                        // Each thread walks the powers in its own order.
                        p.record(t % 2, values[(i + t * 3) % 8] * 1.1, 1, bytes);
                    }
                });
            }
        });
        // Two threads wrote each slot: one page per power serves both.
        for slot in 0..2 {
            let d = p.take(slot, 4_000, 1.0, 1.1, 140.8).unwrap();
            assert_eq!(d.positive().total(), 4_000);
        }
        // Eight pages kept (in whichever groups the anchor, the first
        // value to arrive, put them); the losers' pages given back.
        let groups = held.load(Ordering::Relaxed) - 8 * PAGE_BYTES;
        assert_eq!(groups % GROUP_BYTES, 0, "{groups}");
        assert!(groups <= 2 * GROUP_BYTES, "{groups}");
        assert_eq!(budget.held_bytes(), held.load(Ordering::Relaxed));
    }
}
