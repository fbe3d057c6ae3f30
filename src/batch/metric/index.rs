//! A shard's index: finds an existing series from the caller's borrowed
//! parts with no lock, while the shard's `tokio::sync::Mutex` serialises
//! whoever changes it (one writer at a time).
//!
//! A [`Table`] is an open-addressing hash table of `u32` entries (a tag of
//! the hash's top byte and the series' position), beside the series
//! themselves in segments of write-once slots. A writer fills the next
//! position's slot first, then stores the entry with release ordering; a
//! reader that loads the entry (acquire) finds the slot filled. Entries are
//! never removed from a table and slots never change once filled, so a
//! reader needs no lock and writes nothing shared: a lookup is a few loads.
//!
//! What cannot be done in place is done by building a new table and
//! publishing it (`reader::Published`): growing (the new table shares the old
//! one's segments) and letting go of series (the new table holds only the
//! series that stay). Readers keep the table they hold until they look
//! again; see `reader` for how they learn of a new one, and `series` and
//! `drain` for how a write into a series that was let go of meanwhile
//! still reaches a flush.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use super::key::Seeds;
use super::series::Series;
use crate::attributes::AsAttributes;
use crate::metric::MetricKind;

/// Series per segment (a power of two).
const SEGMENT_SHIFT: u32 = 8;
const SEGMENT: usize = 1 << SEGMENT_SHIFT;

/// A run of write-once series slots.
type Segment = [OnceLock<Series>; SEGMENT];

/// Bits of an entry that hold the position plus one (0: an empty slot).
const POSITION_BITS: u32 = 24;
const POSITION_MASK: u32 = (1 << POSITION_BITS) - 1;

/// Series a table (so a shard) holds at most.
pub(super) const MAX_POSITIONS: usize = POSITION_MASK as usize - 1;

/// The fewest entry slots a table has.
const MIN_SLOTS: usize = 16;

/// Bytes a series costs in a table: its write-once slot, and two entry
/// slots (a table is between 3/8 and 3/4 full).
pub(super) const SERIES_BYTES: usize =
    std::mem::size_of::<OnceLock<Series>>() + 2 * std::mem::size_of::<AtomicU32>();

/// An index of series; see the module's documentation.
pub(super) struct Table {
    /// Entry slots: `tag << 24 | (position + 1)`, or 0.
    slots: Box<[AtomicU32]>,
    /// Segments of series slots, made as positions reach them.
    segments: Box<[OnceLock<Arc<Segment>>]>,
}

#[inline(always)]
fn tag(hash: u64) -> u32 {
    (hash >> 56) as u32
}

impl Table {
    /// An empty table with room for `positions` series.
    pub(super) fn with_capacity(positions: usize) -> Table {
        let slots = (positions.saturating_mul(4) / 3 + 1)
            .next_power_of_two()
            .max(MIN_SLOTS);
        let positions = slots / 4 * 3;
        Table {
            slots: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            segments: (0..positions.div_ceil(SEGMENT))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// How many series the table takes (3/4 of its entry slots).
    pub(super) fn capacity(&self) -> usize {
        (self.slots.len() / 4 * 3).min(MAX_POSITIONS)
    }

    /// The series at `position`, if it was filled.
    #[inline(always)]
    pub(super) fn get(&self, position: usize) -> Option<&Series> {
        self.segments.get(position >> SEGMENT_SHIFT)?.get()?[position & (SEGMENT - 1)].get()
    }

    /// The series `kind`, `name`, `attrs` (in any order), whose hash is
    /// `hash`, if the table holds it. Takes no lock.
    #[inline]
    pub(super) fn find(
        &self,
        hash: u64,
        kind: MetricKind,
        name: &str,
        attrs: &(impl AsAttributes + ?Sized),
    ) -> Option<&Series> {
        self.find_where(hash, |series| series.is(kind, name, attrs))
    }

    /// The series whose hash is `hash` and that `is` says is the one, if
    /// the table holds it. Takes no lock.
    #[inline(always)]
    pub(super) fn find_where(&self, hash: u64, is: impl Fn(&Series) -> bool) -> Option<&Series> {
        let mask = self.slots.len() - 1;
        let tag = tag(hash);
        let mut i = hash as usize & mask;
        // A table is never more than 3/4 full: an empty slot ends every
        // probe well before this bound.
        for _ in 0..self.slots.len() {
            let entry = self.slots[i].load(Ordering::Acquire);
            if entry == 0 {
                return None;
            }
            if entry >> POSITION_BITS == tag {
                if let Some(series) = self.get((entry & POSITION_MASK) as usize - 1) {
                    if is(series) {
                        return Some(series);
                    }
                }
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Fills `position` (the next free one, below [`capacity`](Self::capacity))
    /// with `series` and indexes it under `hash`. The shard's writer only.
    pub(super) fn push(&self, position: usize, hash: u64, series: Series) {
        let segment = self.segments[position >> SEGMENT_SHIFT]
            .get_or_init(|| Arc::new(std::array::from_fn(|_| OnceLock::new())));
        if segment[position & (SEGMENT - 1)].set(series).is_err() {
            unreachable!("a writer fills each position once");
        }
        self.index(position, hash);
    }

    /// Stores the entry of the series at `position` (filled) under `hash`.
    fn index(&self, position: usize, hash: u64) {
        let mask = self.slots.len() - 1;
        let entry = tag(hash) << POSITION_BITS | (position as u32 + 1);
        let mut i = hash as usize & mask;
        while self.slots[i].load(Ordering::Relaxed) != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i].store(entry, Ordering::Release);
    }

    /// The series in position order, up to the first position not filled.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Series> {
        self.segments
            .iter()
            .map_while(OnceLock::get)
            .flat_map(|segment| segment.iter())
            .map_while(OnceLock::get)
    }

    /// A table twice the size holding the same `len` series, sharing their
    /// segments (a series filled in later in either is seen by both).
    pub(super) fn grown(&self, len: usize, seeds: Seeds) -> Table {
        let grown = Table::with_capacity(self.capacity() * 2);
        for (to, from) in grown.segments.iter().zip(self.segments.iter()) {
            if let Some(segment) = from.get() {
                let _ = to.set(segment.clone());
            }
        }
        for (position, series) in self.iter().take(len).enumerate() {
            grown.index(position, series.hash(seeds));
        }
        grown
    }

    /// A new table holding `series`, in that order.
    pub(super) fn from_series(series: Vec<Series>, seeds: Seeds) -> Table {
        let table = Table::with_capacity(series.len());
        for (position, series) in series.into_iter().enumerate() {
            let hash = series.hash(seeds);
            table.push(position, hash, series);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Attributes;

    fn series(name: &str) -> Series {
        Series::new(
            MetricKind::Count,
            Arc::from(name),
            Arc::new(Attributes::default()),
            super::super::series::Placement::Packed,
            &crate::budget::MemoryBudget::new(0),
        )
    }

    #[test]
    fn finds_what_was_pushed_across_growth_and_rebuilds() {
        let seeds = Seeds::new(&Default::default());
        let mut table = Table::with_capacity(0);
        let names: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
        for (position, name) in names.iter().enumerate() {
            if position == table.capacity() {
                table = table.grown(position, seeds);
            }
            let s = series(name);
            table.push(position, s.hash(seeds), s);
        }
        for name in &names {
            let hash = seeds.series(MetricKind::Count, name, seeds.set(&()));
            let found = table.find(hash, MetricKind::Count, name, &());
            assert_eq!(found.map(|s| &*s.name), Some(name.as_str()));
            assert!(table.find(hash, MetricKind::Gauge, name, &()).is_none());
        }
        assert_eq!(table.iter().count(), names.len());
        let kept: Vec<Series> = table.iter().step_by(2).cloned().collect();
        let rebuilt = Table::from_series(kept, seeds);
        for (i, name) in names.iter().enumerate() {
            let hash = seeds.series(MetricKind::Count, name, seeds.set(&()));
            let found = rebuilt.find(hash, MetricKind::Count, name, &()).is_some();
            assert_eq!(found, i % 2 == 0, "{name}");
        }
    }
}
