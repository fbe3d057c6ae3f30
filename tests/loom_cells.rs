//! Loom models of a metric series' lock-free writers against a harvest
//! (`src/batch/metric/series.rs`): the summary's two-slot flip (which a
//! distribution shares, its bucket counted in a page both slots use,
//! `src/batch/metric/buckets.rs`) and the gauge's "timestamp written last".
//! Each replicates the protocol with loom's atomics, orderings as in the
//! code.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

/// The bit of `started` that names the slot writers use.
const HOT: u64 = 1 << 63;

/// A summary reduced to what the protocol moves: per slot, operations
/// finished, observations and their sum (integers, so sums are exact).
#[derive(Default)]
struct Slot {
    done: AtomicU64,
    count: AtomicU64,
    sum: AtomicU64,
}

#[derive(Default)]
struct SummaryState {
    /// Top bit: the slot in use; the rest: operations started, ever.
    started: AtomicU64,
    /// Operations started before the last flip (flushes only).
    drained: AtomicU64,
    slots: [Slot; 2],
    /// A distribution's bucket: one counter per slot, in a page outside
    /// the slots (every observation here falls in this one bucket).
    bucket: [AtomicU64; 2],
}

impl SummaryState {
    /// `DistributionState::record_n` (`SummaryState::merge` without the
    /// bucket): count in, write the slot and the slot's bucket counter,
    /// count out.
    fn observe(&self, x: u64) {
        let n = self.started.fetch_add(1, Ordering::Acquire);
        let index = (n >> 63) as usize;
        let slot = &self.slots[index];
        slot.sum.fetch_add(x, Ordering::Relaxed);
        slot.count.fetch_add(1, Ordering::Relaxed);
        self.bucket[index].fetch_add(1, Ordering::Relaxed);
        slot.done.fetch_add(1, Ordering::SeqCst);
    }

    /// `flip`, waiting for `ready`, then `take`: what one flush reads,
    /// (count, sum, bucket).
    fn flush(&self) -> (u64, u64, u64) {
        let drained = self.drained.load(Ordering::Relaxed);
        if self.started.load(Ordering::Relaxed) & !HOT == drained {
            return (0, 0, 0);
        }
        let before = self.started.fetch_add(HOT, Ordering::AcqRel);
        let started = before & !HOT;
        self.drained.store(started, Ordering::Relaxed);
        let index = (before >> 63) as usize;
        let slot = &self.slots[index];
        while slot.done.load(Ordering::Acquire) < started - drained {
            thread::yield_now();
        }
        slot.done.store(0, Ordering::Relaxed);
        (
            slot.count.swap(0, Ordering::Relaxed),
            slot.sum.swap(0, Ordering::Relaxed),
            self.bucket[index].swap(0, Ordering::Relaxed),
        )
    }
}

/// Two writers and a flush racing, then a last flush: every observation is
/// in exactly one flush, and each flush's count, sum and bucket are of the
/// same observations (sum = 10 x count = 10 x bucket, as every observation
/// is 10). Runs with
/// at most three preemptions, which keeps it to seconds.
#[test]
fn every_observation_lands_whole_in_one_flush() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let state = Arc::new(SummaryState::default());
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let state = state.clone();
                thread::spawn(move || state.observe(10))
            })
            .collect();
        let first = state.flush();
        for w in writers {
            w.join().unwrap();
        }
        let last = state.flush();
        for (count, sum, bucket) in [first, last] {
            assert_eq!(sum, 10 * count, "a flush read a torn summary");
            assert_eq!(bucket, count, "a flush read a torn distribution");
        }
        assert_eq!(first.0 + last.0, 2, "an observation was lost or read twice");
    });
}

/// A gauge: the value, then the time it was set (0: not set since the last
/// flush), written last with release ordering; a flush takes the time with
/// acquire ordering, then reads the value.
#[derive(Default)]
struct GaugeState {
    value: AtomicU64,
    timestamp: AtomicU64,
}

impl GaugeState {
    fn set(&self, value: u64, timestamp: u64) {
        self.value.store(value, Ordering::Relaxed);
        self.timestamp.store(timestamp, Ordering::Release);
    }

    fn take(&self) -> Option<(u64, u64)> {
        if self.timestamp.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let at = self.timestamp.swap(0, Ordering::Acquire);
        (at != 0).then(|| (self.value.load(Ordering::Relaxed), at))
    }
}

/// One writer sets twice while a flush runs: a flush that reads a set's
/// time reads that set's value or a later one, never an earlier one.
#[test]
fn a_gauge_is_sent_with_a_value_no_older_than_its_time() {
    loom::model(|| {
        let gauge = Arc::new(GaugeState::default());
        let writer = {
            let gauge = gauge.clone();
            thread::spawn(move || {
                gauge.set(1, 100);
                gauge.set(2, 200);
            })
        };
        if let Some((value, at)) = gauge.take() {
            assert!(at != 200 || value == 2, "time 200 sent with value {value}");
        }
        writer.join().unwrap();
    });
}
