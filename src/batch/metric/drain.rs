//! A flush: every series read and reset with the shards' locks released,
//! then the series nobody uses any more let go of, a shard at a time.
//!
//! Letting go of series happens under the shard's lock: a table without
//! them is published, they are marked retired (`series`), and read a last
//! time. A recording that found one of them in a table it still held, and
//! wrote after that last read, finds the mark and leaves the series with
//! the batch's orphans, which the next flush reads: every write is sent
//! once.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::MetricBatch;
use super::cardinality::Left;
use super::reader;
use super::series::{Drained, Harvest, ItemDelta, Series, retire_all};
use super::shard::{ShardLock, overflow_series_bytes, series_bytes};
use crate::batch::Taken;
use crate::budget::HeldBytes;
use crate::common::Common;
use crate::metric::Metric;
use crate::time::interval_millis;

/// A flush yields to the runtime after draining this many series.
const FLUSH_YIELD_SERIES: usize = 4096;

/// What a flush does with series that no handle holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// Keep them until they have been idle for the batch's idle harvests.
    Idle,
    /// Let go of all of them: the caller takes everything out.
    All,
}

impl Harvest {
    /// Reads and resets `series`; returns whether it sent something.
    async fn drain(&mut self, series: &Series) -> bool {
        match series.drain(self) {
            Drained::Done(emitted) => emitted,
            Drained::Pending(flipped) => {
                // An observation is being recorded on another thread.
                while !series.ready(&flipped) {
                    tokio::task::yield_now().await;
                }
                series.finish(&flipped, self)
            }
        }
    }
}

impl MetricBatch {
    pub(super) async fn drain(&self, release: Release) -> Taken<Metric> {
        let mut clock = self.interval.lock().await;
        self.shared.refusals.next_interval();
        let previous = clock.roll();
        self.shared.clock.align(&clock);
        let interval_ms = interval_millis(
            clock
                .instant()
                .saturating_duration_since(previous.instant()),
        );
        let budget = &self.shared.budget;
        let mut out = Harvest {
            metrics: Vec::new(),
            distributions: Vec::new(),
            items: ItemDelta::default(),
            interval_start_ms: previous.start_ms(),
            flush_ms: clock.start_ms(),
        };
        // Interned strings and sets of shards left empty: handed over with
        // the metrics that use them, still counted.
        let mut handed_bytes = 0;
        let mut since_yield = 0;
        for shard in self.shards.iter() {
            let table = {
                let mut guard = shard.lock.lock().await;
                if guard.sweep {
                    // Strings and sets of series let go of earlier, which the
                    // metrics sent then (or another thread's cached table)
                    // used.
                    let freed = guard.sweep();
                    guard.sweep = freed > 0;
                    budget.release_bytes(freed);
                }
                guard.table.clone()
            };
            let mut leaving = false;
            for series in table.iter() {
                since_yield += 1;
                let emitted = out.drain(series).await;
                series.note_idle(emitted);
                leaving |= self.may_leave(series, release);
            }
            drop(table);
            if leaving {
                handed_bytes += self.let_go(shard, release, &mut out).await;
            }
            if since_yield >= FLUSH_YIELD_SERIES {
                since_yield = 0;
                // Reading a large shard takes a while; let the worker's other
                // tasks run in between.
                tokio::task::yield_now().await;
            }
        }
        // Series let go of that were written into after their last read,
        // by recordings that still held an old table.
        let orphans = std::mem::take(
            &mut *self
                .orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for series in &orphans {
            out.drain(series).await;
        }
        drop(orphans);
        self.end_interval(release);
        drop(clock);
        let Harvest {
            metrics,
            distributions,
            items,
            ..
        } = out;
        items.apply(budget);
        // Valid as their series were; a refusal (the distributions'
        // budget or buffer full, the batch closed) is counted there.
        self.distributions.record_valid(distributions).await;
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

    /// Whether a flush may let go of `series`: no handle holds it, and it
    /// has been idle long enough (or everything goes).
    fn may_leave(&self, series: &Series, release: Release) -> bool {
        series.handles() == 0 && (release == Release::All || series.idle() >= self.idle_harvests)
    }

    /// Under the shard's lock: publishes a table without the series that
    /// may leave, marks them retired and reads them a last time. Returns
    /// the bytes of interned strings and sets handed over with the metrics
    /// (a shard emptied by [`Release::All`]).
    async fn let_go(&self, shard: &ShardLock, release: Release, out: &mut Harvest) -> usize {
        let budget = &self.shared.budget;
        let mut guard = shard.lock.lock().await;
        // Decided again under the lock, where handles are bound.
        let (kept, gone): (Vec<Series>, Vec<Series>) = guard
            .table
            .iter()
            .cloned()
            .partition(|s| !self.may_leave(s, release));
        if gone.is_empty() {
            return 0;
        }
        guard.rebuild(kept, self.seeds, &shard.published);
        retire_all(&gone);
        let mut bytes = 0;
        for series in &gone {
            out.drain(series).await;
            bytes += series_bytes(series.kind(), series.placement());
        }
        guard.held_bytes -= bytes;
        self.series.fetch_sub(gone.len(), Ordering::Relaxed);
        budget.release_bytes(bytes);
        // After the series are counted out: a reservation taken again never
        // makes the batch look fuller than it is.
        self.leave_names(&gone);
        drop(gone);
        // This thread's cache may hold the table just replaced.
        reader::drop_cached_tables();
        if guard.len == 0 && release == Release::All {
            // Everything went: the interners go with the metrics.
            return guard.clear_interners();
        }
        budget.release_bytes(guard.sweep());
        // The metrics just read use the strings and sets of the series that
        // went: swept again at the next flush.
        guard.sweep = true;
        0
    }

    /// Under a shard's lock: the names of series let go of count them out;
    /// a name's reservation for its overflow series is taken again when
    /// that series leaves and the name stays, and given back when the name
    /// leaves.
    fn leave_names(&self, gone: &[Series]) {
        let budget = &self.shared.budget;
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        for series in gone {
            let overflow = std::sync::Arc::ptr_eq(&series.attributes, &self.overflow_set);
            let reserve = overflow_series_bytes(series.kind(), &series.name);
            match names.left(series, overflow, reserve, budget) {
                Left::Stays => {}
                Left::OverflowSeries => {
                    self.series.fetch_add(1, Ordering::Relaxed);
                    self.reservations.fetch_add(1, Ordering::Relaxed);
                }
                Left::Gone {
                    reserved_bytes: Some(bytes),
                } => {
                    self.series.fetch_sub(1, Ordering::Relaxed);
                    self.reservations.fetch_sub(1, Ordering::Relaxed);
                    budget.release_bytes(bytes);
                }
                Left::Gone {
                    reserved_bytes: None,
                } => {}
            }
        }
    }

    /// Ends the interval for the overflow report: counts the measurements
    /// that went to overflow series, and logs the names that sent them (at
    /// most once an hour each). With [`Release::All`], forgets the names'
    /// tallies of the day.
    fn end_interval(&self, release: Release) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let (overflowed, to_log) = names.end_interval(std::time::Instant::now());
        if release == Release::All {
            // Everything goes, the names' tallies of the day too.
            names.forget_days(&self.shared.budget);
        }
        drop(names);
        crate::batch::RecordCounters::add(
            &self.shared.refusals.counts.measurements_overflowed,
            overflowed,
        );
        for name in to_log {
            let (top_key, top_values) = name.top_attribute.unwrap_or_default();
            tracing::warn!(
                metric = %name.name,
                limit = name.limit,
                overflowed = name.overflowed_last_interval,
                top_key = %top_key,
                top_values,
                "a metric name had no room for new series (its series limit, or with no limit \
                 the batch's): new attribute sets are recorded into its overflow series \
                 (otel.metric.overflow = true); the attribute key with the most distinct values \
                 is the likely cause"
            );
        }
    }
}
