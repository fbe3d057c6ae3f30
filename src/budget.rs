//! The memory budget of one pipeline: every byte the SDK holds for it, from
//! the moment an item is recorded until its payload is accepted or dropped.
//!
//! A batch reserves room for each item it takes (an aggregating batch, for
//! each new series) and refuses an item that would take the pipeline past its
//! record limit: the budget less [`WORK_RESERVE`], kept for the work of
//! sending (a payload being compressed, a payload split after a 413), which
//! is never refused. At a harvest the batch hands what it held to its
//! harvester, which encodes it into compressed payloads (handing the items'
//! bytes over to the compressed ones as it goes) and queues them; the queue
//! may fill half the record limit, and past that its oldest payload is
//! dropped so that new data keeps flowing during an outage. Bytes are
//! measured from what is held in memory (strings, attribute tables, series
//! bookkeeping, compressed bodies), never from compressed sizes alone.
//!
//! Items are counted too, for the live figures and for exact accounting: an
//! item stays counted until its payload is accepted or its drop is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The memory budget of one pipeline (one batch and its harvester) unless
/// told otherwise: 16 MiB, so 64 MiB for the four pipelines of a
/// [`Telemetry`](crate::Telemetry).
pub const DEFAULT_MEMORY_BUDGET: usize = 16 * 1024 * 1024;

/// What recording leaves free for the work of sending: a payload being
/// compressed and a payload split in two after a 413 (two payloads at the
/// APIs' limit of 10^6 bytes).
pub(crate) const WORK_RESERVE: usize = 2_000_000;

/// The smallest budget a pipeline takes: the work reserve and as much again
/// for recording.
pub(crate) const MIN_MEMORY_BUDGET: usize = 4 * 1024 * 1024;

/// What a pipeline holds in memory right now, against its budget.
///
/// ```
/// use newrelic_telemetry::{Log, LogBatch};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let logs = LogBatch::new();
/// assert_eq!(logs.memory().held_items, 0);
/// logs.record(Log::new("x".repeat(10_000))).await;
///
/// let memory = logs.memory();
/// assert_eq!(memory.held_items, 1);
/// assert!(memory.held_bytes > 10_000); // the message and the record around it
/// assert!(memory.held_bytes <= memory.budget_bytes);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// The pipeline's budget in bytes.
    pub budget_bytes: usize,
    /// Past this many bytes held, new items are refused: the rest of the
    /// budget (2 MB) is kept for the work of sending (a payload being
    /// compressed, a payload split after a 413).
    pub record_limit_bytes: usize,
    /// Bytes held now: items waiting in the batch, items being encoded, and
    /// compressed payloads waiting to be sent or being sent.
    pub held_bytes: usize,
    /// Items held now (for an aggregating batch, series), wherever they are in
    /// the pipeline, until they are accepted or their drop is counted.
    pub held_items: usize,
    /// The most bytes held at any moment so far.
    pub peak_bytes: usize,
}

/// The shared counters of one pipeline's budget. Named by the sealed
/// [`Batch`](crate::batch::Batch) trait, so `pub`, but not reachable from outside.
#[derive(Debug)]
#[allow(unreachable_pub)]
pub struct MemoryBudget {
    limit: usize,
    bytes: AtomicUsize,
    items: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least [`MIN_MEMORY_BUDGET`]).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit: limit.max(MIN_MEMORY_BUDGET),
            bytes: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes room for one new item of `bytes`, unless that would take the
    /// pipeline within [`WORK_RESERVE`] of its budget: then nothing changes
    /// and `false` is returned.
    pub(crate) fn try_reserve_item(&self, bytes: usize) -> bool {
        let reserved = self.try_reserve_within(bytes, self.limit - WORK_RESERVE);
        if reserved {
            self.items.fetch_add(1, Ordering::Relaxed);
        }
        reserved
    }

    /// Takes room for `bytes` that hold no item (a series bound to a handle
    /// before anything is recorded into it), unless that would pass the
    /// budget: then nothing changes and `false` is returned.
    pub(crate) fn try_reserve_bytes(&self, bytes: usize) -> bool {
        self.try_reserve_within(bytes, self.limit)
    }

    /// Takes room for `bytes` that hold no item but may be refused like
    /// one (what a batch keeps to report on what it records), unless that
    /// would take the pipeline within [`WORK_RESERVE`] of its budget.
    pub(crate) fn try_reserve_bookkeeping(&self, bytes: usize) -> bool {
        self.try_reserve_within(bytes, self.limit - WORK_RESERVE)
    }

    fn try_reserve_within(&self, bytes: usize, limit: usize) -> bool {
        let mut held = self.bytes.load(Ordering::Relaxed);
        loop {
            let Some(next) = held.checked_add(bytes).filter(|&n| n <= limit) else {
                return false;
            };
            match self
                .bytes
                .compare_exchange_weak(held, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(now) => held = now,
            }
        }
    }

    /// Counts `n` items more, whatever the budget says: data recorded into
    /// room already held (an aggregated series written to again after a
    /// flush).
    pub(crate) fn add_items(&self, n: usize) {
        if n > 0 {
            self.items.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts `bytes` more, whatever the budget says: for memory that holds
    /// data already recorded (a payload being compressed), which is never
    /// refused.
    pub(crate) fn add_bytes(&self, bytes: usize) {
        if bytes > 0 {
            let held = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            self.peak.fetch_max(held, Ordering::Relaxed);
        }
    }

    /// Gives back `bytes`.
    pub(crate) fn release_bytes(&self, bytes: usize) {
        if bytes > 0 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Gives back one item's room: an item taken and then not kept.
    pub(crate) fn unreserve_item(&self, bytes: usize) {
        self.release_bytes(bytes);
        self.resolve_items(1);
    }

    /// `n` items left the pipeline: accepted, or their drop counted.
    pub(crate) fn resolve_items(&self, n: usize) {
        if n > 0 {
            self.items.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Bytes held now.
    pub(crate) fn held_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Items held now.
    pub(crate) fn held_items(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> MemoryStats {
        MemoryStats {
            budget_bytes: self.limit,
            record_limit_bytes: self.limit - WORK_RESERVE,
            held_bytes: self.held_bytes(),
            held_items: self.held_items(),
            peak_bytes: self.peak.load(Ordering::Relaxed),
        }
    }
}

/// Bytes counted against a budget for as long as this value lives; they are
/// given back when it is dropped. A value with no budget counts nothing (a
/// client used on its own).
#[derive(Debug, Default)]
pub(crate) struct HeldBytes {
    budget: Option<Arc<MemoryBudget>>,
    bytes: usize,
}

impl HeldBytes {
    /// Takes over `bytes` already counted against `budget` (a batch handing
    /// over what it held).
    pub(crate) fn adopt(budget: Option<Arc<MemoryBudget>>, bytes: usize) -> Self {
        HeldBytes { budget, bytes }
    }

    /// Nothing held yet, against `budget`.
    pub(crate) fn empty(budget: Option<Arc<MemoryBudget>>) -> Self {
        HeldBytes { budget, bytes: 0 }
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `bytes` now: counts the growth or gives back the difference.
    pub(crate) fn set(&mut self, bytes: usize) {
        if let Some(budget) = &self.budget {
            if bytes > self.bytes {
                budget.add_bytes(bytes - self.bytes);
            } else {
                budget.release_bytes(self.bytes - bytes);
            }
        }
        self.bytes = bytes;
    }

    /// Gives back `release` of these bytes and sets `into` to hold
    /// `into_total`, as one change to the budget: the bytes of items handed
    /// over to the compressed bytes that now hold them are never counted
    /// twice, nor left uncounted, by a recording that looks in between.
    pub(crate) fn hand_over(&mut self, release: usize, into: &mut HeldBytes, into_total: usize) {
        let release = release.min(self.bytes);
        self.bytes -= release;
        let grow = into_total.saturating_sub(into.bytes);
        let shrink = into.bytes.saturating_sub(into_total);
        into.bytes = into_total;
        let same = match (&self.budget, &into.budget) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            if let Some(budget) = &self.budget {
                let (up, down) = (grow, release + shrink);
                if up > down {
                    budget.add_bytes(up - down);
                } else {
                    budget.release_bytes(down - up);
                }
            }
        } else {
            if let Some(budget) = &into.budget {
                budget.add_bytes(grow);
                budget.release_bytes(shrink);
            }
            if let Some(budget) = &self.budget {
                budget.release_bytes(release);
            }
        }
    }

    /// A new, empty holder against the same budget.
    pub(crate) fn sibling(&self) -> Self {
        HeldBytes::empty(self.budget.clone())
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release_bytes(self.bytes);
        }
    }
}

/// The heap and inline size of a value, as counted against a budget. A
/// bound of the sealed [`BatchItem`](crate::batch::BatchItem) trait, so `pub`, but not
/// reachable from outside.
#[allow(unreachable_pub)]
pub trait HeapSize {
    /// Bytes this value holds, its own inline size included.
    fn held_bytes(&self) -> usize;
}

/// What an `Arc<str>` of `len` bytes holds on the heap (two counters and the text).
pub(crate) const fn arc_str_bytes(len: usize) -> usize {
    2 * std::mem::size_of::<usize>() + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_short_of_the_work_reserve_and_come_back() {
        let budget = MemoryBudget::new(MIN_MEMORY_BUDGET);
        let room = MIN_MEMORY_BUDGET - WORK_RESERVE;
        assert!(budget.try_reserve_item(room - 10));
        assert!(!budget.try_reserve_item(11));
        assert!(budget.try_reserve_item(10));
        assert_eq!(budget.snapshot().held_items, 2);
        budget.unreserve_item(10);
        assert_eq!(budget.held_bytes(), room - 10);
        assert_eq!(budget.snapshot().peak_bytes, room);
    }

    #[test]
    fn a_hand_over_is_one_change() {
        let budget = MemoryBudget::new(0);
        let mut raw = HeldBytes::adopt(Some(budget.clone()), 0);
        budget.add_bytes(1000);
        raw.bytes = 1000;
        let mut packed = raw.sibling();
        raw.hand_over(600, &mut packed, 100);
        assert_eq!(
            (raw.bytes(), packed.bytes(), budget.held_bytes()),
            (400, 100, 500)
        );
        assert_eq!(budget.snapshot().peak_bytes, 1000, "never counted twice");
        raw.hand_over(400, &mut packed, 150);
        assert_eq!(budget.held_bytes(), 150);
    }

    #[test]
    fn held_bytes_follow_their_holder() {
        let budget = MemoryBudget::new(0);
        assert_eq!(budget.limit(), MIN_MEMORY_BUDGET);
        let mut held = HeldBytes::empty(Some(budget.clone()));
        held.set(500);
        held.set(200);
        assert_eq!(budget.held_bytes(), 200);
        let mut other = held.sibling();
        other.set(50);
        assert_eq!(budget.held_bytes(), 250);
        drop(held);
        assert_eq!(budget.held_bytes(), 50);
        drop(other);
        assert_eq!(budget.held_bytes(), 0);
        assert_eq!(budget.snapshot().peak_bytes, 500);
    }
}
